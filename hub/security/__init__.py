"""Site security: who may use the broker, device credentials, certificates, the audit trail."""
