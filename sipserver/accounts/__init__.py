"""Who may log in: accounts and institutions (the registry), password hashes, the failed-login
lockout and the queue of password checks."""
