"""``caimx users add|list|remove``: who may use the API (keys are shown once, stored hashed)."""

from __future__ import annotations

import argparse

from caimx.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    users = subparsers.add_parser(
        "users",
        help="add, list or remove API users (needs CAIMX_REDIS_URL)",
        description=(
            "Manage the users of the API. Each user has one API key, sent as "
            "'Authorization: Bearer KEY'. The key is printed once, when it is made; only a salted "
            "hash of it is kept. Admins see every user's jobs."
        ),
    )
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user and print its API key (once)")
    add.add_argument("name", help="user name (letters, digits, '.', '_', '-')")
    add.add_argument("--admin", action="store_true", help="may see and cancel every job")
    add.add_argument("--replace", action="store_true",
                     help="the user exists: give it a new key (the old one stops working)")
    add.set_defaults(func=run_add)
    listing = sub.add_parser("list", help="list users (never their keys)")
    listing.set_defaults(func=run_list)
    remove = sub.add_parser("remove", help="remove a user; its key stops working at once")
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)


def _store():
    import redis

    from caimx.cli import CliError
    from caimx.users import UserStore

    settings = get_settings()
    if not settings.redis_url:
        raise CliError("caimx users needs CAIMX_REDIS_URL, the Redis that the API uses")
    return UserStore(redis.Redis.from_url(settings.redis_url, decode_responses=True))


def run_add(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.users import UserError

    try:
        made = _store().add(args.name, admin=args.admin, replace=args.replace)
    except UserError as exc:
        raise CliError(str(exc)) from exc
    role = "admin" if made.user.admin else "user"
    print(f"{role} {made.user.name}: API key (shown once, keep it secret):")
    print(made.key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    for user in _store().list():
        created = datetime.fromtimestamp(user.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M")
        role = "admin" if user.admin else "user"
        print(f"{user.name}\t{role}\tkey caimx_{user.key_id}_***\tcreated {created} UTC")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.users import UserError

    try:
        _store().remove(args.name)
    except UserError as exc:
        raise CliError(str(exc)) from exc
    print(f"removed {args.name}")
    return 0
