"""Pure torch model definitions: one config dataclass and one module per file."""
