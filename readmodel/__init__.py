"""The Redis read model: `writer` projects workflow state, `reader` serves queries."""
