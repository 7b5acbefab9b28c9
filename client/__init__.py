"""`python -m client`: a command-line client for the cheese, movie and soccer services."""
