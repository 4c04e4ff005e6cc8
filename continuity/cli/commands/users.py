"""``continuity users add|list|remove``: local identities of the devhost (roles operator, approver, admin).

``add`` prints the new API key once; it is also kept for ``--user NAME`` in the owner-only client keyring
under the local dir. The devhost verifies keys against salted hashes in ``users.json`` (mode 600).
"""

from __future__ import annotations

import argparse
from typing import Any

from continuity.cli.output import emit
from continuity.kernel.identity import Role, parse_roles


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="local users of the devhost and their roles")
    verbs = users.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="create a user and print its API key once")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", action="append", required=True, choices=[r.value for r in Role],
                     help="reader (reads), operator (requests), approver (approves), admin (all); repeatable")
    add.add_argument("--tenant", action="append", default=None, metavar="TENANT",
                     help="limit what the user may see to this tenant; repeatable (default: every tenant)")
    add.add_argument("--link", action="append", default=None, metavar="PRINCIPAL_ID",
                     help="another identity of the same person, aad:{tenant id}/{object id}: neither identity may "
                          "approve what the other requested; repeatable")
    add.add_argument("--replace", action="store_true", help="issue a new key for an existing user")
    add.add_argument("--no-save-key", action="store_true", help="do not keep the key in the local client keyring")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=cmd_add)
    listing = verbs.add_parser("list", help="users and roles (never keys)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    remove = verbs.add_parser("remove", help="delete a user and its key (succeeds if already gone)")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=cmd_remove)


def cmd_add(args: argparse.Namespace) -> int:
    from continuity.adapters.local.identity_store import IdentityStore
    store = IdentityStore()
    roles = sorted(parse_roles(args.role))
    if args.tenant:
        from continuity.kernel.settings import configured_registry

        registry = configured_registry()
        for tenant in args.tenant:
            registry.get_tenant(tenant)  # an unknown tenant is refused, naming the known ones
    key = store.add_user(args.name, list(roles), replace=args.replace, save_key=not args.no_save_key,
                         tenants=args.tenant, links=args.link)
    saved = "" if args.no_save_key else f"\nkept for `--user {args.name}` in {store.key_file(args.name)}"
    emit(args, {"name": args.name, "roles": [str(r) for r in roles], "key": key},
         f"user {args.name} ({', '.join(str(r) for r in roles)}) created.\n"
         f"API key (shown once; send it as X-Continuity-Key): {key}{saved}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from continuity.adapters.local.identity_store import IdentityStore
    users = IdentityStore().list_users()
    rows = [{"name": u.name, "id": u.principal_id, "roles": sorted(str(r) for r in u.roles),
             "links": sorted(u.links), "created_at": u.created_at} for u in users]
    text = "\n".join(f"{r['name']:<24} {','.join(r['roles']):<26} {r['created_at']}" for r in rows) or "no local users"
    emit(args, rows, text)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from continuity.adapters.local.identity_store import IdentityStore

    removed = IdentityStore().remove_user(args.name)
    print(f"user {args.name} removed" if removed else f"user {args.name} did not exist")
    return 0
