"""The first administrators: one per centre that has no user yet.

On the first start (an empty users table) every configured centre gets an
administrator named ``admin-<centre id>``; a centre added to the config later
gets one the same way on the next start. The password comes from, in order:

1. the YAML secrets file ``auth.bootstrap_secrets_file`` (centre id → password);
2. the environment variable ``HALLWATCH_ADMIN_PASSWORD_<CENTRE>`` (upper case, ``-`` → ``_``);
3. otherwise a random one, written once to standard error in a box with the
   username. It never goes through :mod:`logging` and is stored only as an argon2 hash.

A password from the file or the environment shorter than 12 characters stops the
start-up with :class:`BootstrapError`. Each administrator and the audit record of
its creation are written in one transaction. An empty database under a store marker
(its data removed or replaced) never gets here: :mod:`vms.storage.identity` refuses
the start first. Runs once in the application's lifespan.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import yaml

from vms.auth import AuthService
from vms.auth_types import Conflict
from vms.passwords import password_problem
from vms.users import centres_without_users, create_user

log = logging.getLogger(__name__)

ENV_PREFIX = "HALLWATCH_ADMIN_PASSWORD_"


class BootstrapError(Exception):
    """The first administrators' passwords cannot be used; the message names the source."""


def admin_username(centre_id: str) -> str:
    return f"admin-{centre_id}"


def env_variable(centre_id: str) -> str:
    return ENV_PREFIX + centre_id.upper().replace("-", "_")


def read_secrets_file(path: Path) -> dict[str, str]:
    """The centre → password mapping of a bootstrap secrets file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BootstrapError(f"cannot read the bootstrap secrets file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        # The YAML error would quote the file's content, which is secret.
        raise BootstrapError(f"the bootstrap secrets file {path} is not valid YAML") from err
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise BootstrapError(
            f"the bootstrap secrets file {path} must map centre ids to passwords, "
            "e.g. 'meizhou: <password>' (quote passwords that YAML would read as numbers)"
        )
    return data


def _password_for(
    centre_id: str, secrets_file: dict[str, str], file_name: str, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """(password, where it came from), or ``None`` when it must be generated."""
    if centre_id in secrets_file:
        password, source = secrets_file[centre_id], f"the secrets file {file_name}"
    elif env_variable(centre_id) in environ:
        password, source = environ[env_variable(centre_id)], f"${env_variable(centre_id)}"
    else:
        return None
    problem = password_problem(password)
    if problem is not None:
        raise BootstrapError(f"the first admin password of centre {centre_id} from {source}: {problem}")
    return password, source


def _announce(username: str, password: str, out: TextIO) -> None:
    lines = [
        "Hallwatch created a first administrator:",
        f"  username: {username}",
        f"  password: {password}",
        "This password is shown only this once. Log in and change it,",
        "or create your own administrator and disable this one.",
    ]
    width = max(len(line) for line in lines)
    edge = "+" + "-" * (width + 2) + "+"
    out.write("\n".join([edge, *[f"| {line.ljust(width)} |" for line in lines], edge]) + "\n")
    out.flush()


async def bootstrap_admins(
    auth: AuthService, *, environ: Mapping[str, str] | None = None, out: TextIO | None = None
) -> list[str]:
    """Create the first administrator of every centre without users; their usernames."""
    environ = os.environ if environ is None else environ
    centres = await centres_without_users(auth)
    await auth.passwords.prepare()
    if not centres:
        return []
    path = auth.settings.bootstrap_secrets_file
    from_file = read_secrets_file(path) if path is not None else {}
    planned = [(c, _password_for(c, from_file, str(path), environ)) for c in centres]
    created = []
    for centre_id, given in planned:
        username = admin_username(centre_id)
        password, source = given or (secrets.token_urlsafe(18), "generated")
        try:
            await create_user(
                auth,
                None,
                username=username,
                centre_id=centre_id,
                role="admin",
                password=password,
                note=f" at first start (password {'generated' if given is None else 'from ' + source})",
            )
        except Conflict:
            log.warning("%s exists already (another instance created it); skipped", username)
            continue
        created.append(username)
        if given is None:
            _announce(username, password, out or sys.stderr)
            log.warning("created %s with a generated password, shown once on standard error", username)
        else:
            log.info("created %s with the password from %s", username, source)
    return created
