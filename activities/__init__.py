"""Activities: the only code of a workflow that touches the database or a gateway."""
