"""`python -m utils.train_induction [--seed N] [--steps N] [--out PATH]`: retrain chapter 04's induction model."""

import sys

from utils.induction import main

if __name__ == "__main__":
    sys.exit(main())
