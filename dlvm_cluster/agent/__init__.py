"""The per-cluster agent program: SSH connections to the nodes kept open between dlvm
commands (server.py serves, work.py does a request's work). A program on top of the rest, so
it may call orchestrate; remote/agent_client.py and remote/agent_process.py are its other
side, and never import it."""
