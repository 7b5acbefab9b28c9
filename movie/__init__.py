"""The movie catalogue: lookups by id and title, the full list and a director filter."""
