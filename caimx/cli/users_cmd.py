"""``caimx users add|list|remove|limits``: who may use the API (keys are shown once, stored
hashed) and how much each user may take."""

from __future__ import annotations

import argparse


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
    limits = sub.add_parser(
        "limits", help="show or set one user's own limits",
        description=(
            "Without options: show the user's limits. Each option sets one: a number (sizes "
            "also as '500GiB', '2TB'), 0 for no limit, or 'default' for the service-wide "
            "CAIMX_* setting. Takes effect on the user's next request."
        ),
    )  # fmt: skip
    limits.add_argument("name")
    limits.add_argument("--active-jobs", type=_count, metavar="N|default",
                        help="queued + running jobs (CAIMX_MAX_ACTIVE_JOBS_PER_USER)")
    limits.add_argument("--upload-per-day", type=_size, metavar="SIZE|default",
                        help="bytes uploaded per UTC day (CAIMX_MAX_UPLOAD_BYTES_PER_DAY)")
    limits.add_argument("--storage", type=_size, metavar="SIZE|default",
                        help="uploads + results kept (CAIMX_STORAGE_QUOTA_BYTES)")
    limits.set_defaults(func=run_limits)


DEFAULT = "default"


def _count(text: str) -> int | str:
    if text == DEFAULT:
        return DEFAULT
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'default'") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a limit is 0 (none) or more")
    return value


def _size(text: str) -> int | str:
    if text == DEFAULT:
        return DEFAULT
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (e.g. 1000000, 500GiB, 2TB) or 'default'") from None


def _store():
    import redis

    from caimx.cli import CliError
    from caimx.settings import get_settings
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


def _shown(own: int | None, setting: int, *, size: bool) -> str:
    from pydantic import ByteSize

    value = setting if own is None else own
    text = "no limit" if value == 0 else (ByteSize(value).human_readable() if size else str(value))
    return f"{text} ({'service default' if own is None else 'own'})"


def run_limits(args: argparse.Namespace) -> int:
    from caimx.cli import CliError
    from caimx.settings import get_settings
    from caimx.users import UserError

    store = _store()
    changes = {attr: (None if value == DEFAULT else value)
               for attr, value in (("active_jobs", args.active_jobs),
                                   ("upload_bytes_per_day", args.upload_per_day),
                                   ("storage_bytes", args.storage))
               if value is not None}  # fmt: skip
    try:
        user = store.set_limits(args.name, **changes) if changes else store.get(args.name)
    except UserError as exc:
        raise CliError(str(exc)) from exc
    if user is None:
        raise CliError(f"there is no user {args.name!r}")
    settings = get_settings()
    own = user.limits
    print(f"{user.name}:")
    print("  active jobs:      "
          + _shown(own.active_jobs, settings.max_active_jobs_per_user, size=False))
    print("  upload per day:   "
          + _shown(own.upload_bytes_per_day, settings.max_upload_bytes_per_day, size=True))
    print("  storage:          "
          + _shown(own.storage_bytes, settings.storage_quota_bytes, size=True))
    return 0
