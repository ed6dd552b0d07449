"""The trust model: keys and certificates, XUA assertions, WS-Security, access policy (ITI TF-2 §3.40)."""
