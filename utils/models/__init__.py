"""Trained models that ship with the course (`course_gpt`: a small GPT-2 trained on Python's standard library)."""
