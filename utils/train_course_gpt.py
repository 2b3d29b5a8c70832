"""`python -m utils.train_course_gpt [--seed N] [--steps N] [--out PATH]`: retrain the course GPT and write its card."""

import sys

from utils.models.course_gpt_train import main

if __name__ == "__main__":
    sys.exit(main())
