"""Commands on the nodes themselves.

commands    exec, sync, ssh-config, status: inventory -> SSH fan-out
masking     secret values hidden from every line the nodes print
"""
