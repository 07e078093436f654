"""The edges: the LiteLLM client, key files and sops, Kubernetes, locks, the audit trail, GitHub."""
