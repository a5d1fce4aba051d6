"""Order sagas. Kept free of side effects: Temporal's sandbox imports this package."""
