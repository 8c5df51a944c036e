"""Accounts and security: users, roles, permissions, passwords, tokens, two-factor and the access rules.

Nothing here imports the web layer; `xcore.web.auth` turns these into middleware, routes and HTTP problems.
"""
