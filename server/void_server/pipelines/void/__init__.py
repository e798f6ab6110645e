"""VOID (Netflix's video object and interaction removal) on diffusers; see docs/pipeline.md."""
