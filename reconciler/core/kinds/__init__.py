"""The resource kinds: each module holds one kind's live model, ownership rule, diff and changes
(docs/design.md, "Adding a kind")."""
