"""Protocol adapters: SMTP, IMAP, MIME."""
