"""The command-line options of the commands that talk to a coordinator (``query
--server``, ``skim --server``, ``status``, ``health``): its address, a bearer token
and the certificate to trust when it serves TLS (as the Ansible deployment does), and
the Client they make.  Parsing only; the commands are in cli.py and skim_cli.py."""

from __future__ import annotations

import os


def add_server_arguments(parser, server_help: str, required: bool = False, token: bool = True) -> None:
    parser.add_argument("--server", required=required, help=server_help)
    if token:
        parser.add_argument("--token", default=os.environ.get("SKYHOOK_TOKEN"),
                            help="bearer token for --server (default: $SKYHOOK_TOKEN)")
    parser.add_argument("--tls-ca", default=os.environ.get("SKYHOOK_TLS_CA"), metavar="PEM",
                        help="talk TLS to --server, trusting this certificate (the coordinator's own, "
                             "or its CA; default: $SKYHOOK_TLS_CA)")


def client(args, **kwargs):
    """The Client of the parsed ``args`` (add_server_arguments's)."""
    from .service.client import Client

    kwargs.setdefault("compression", getattr(args, "compression", None))   # query's --compression
    return Client(args.server, token=getattr(args, "token", None), tls_ca=args.tls_ca, **kwargs)
