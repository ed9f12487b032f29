"""`python -m behavio ...` (also `accelerate launch -m behavio train ...`)."""

from behavio.cli import main

main()
