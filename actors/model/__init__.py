"""The core's data: small frozen classes that say what happened and what is kept.

Nothing here imports trio or changes state; the machines and the actors build on it.
"""
