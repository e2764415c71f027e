from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

# (username, password, is_staff and superuser): the README tells people these.
DEMO_USERS = (
    ("alice", "alice", False),
    ("bob", "bob", False),
    ("admin", "admin", True),
)


class Command(BaseCommand):
    help = "Create the demo users alice/alice, bob/bob and admin/admin (superuser)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        for username, password, is_admin in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                # Idempotent, and never undoes what someone changed in the demo.
                self._say(f"User {username!r} exists; left unchanged.", options)
                continue
            if is_admin:
                User.objects.create_superuser(username, password=password)
                self._say(f"Created superuser {username!r} (password {password!r}).", options)
            else:
                User.objects.create_user(username, password=password)
                self._say(f"Created user {username!r} (password {password!r}).", options)

    def _say(self, message: str, options: dict[str, Any]) -> None:
        if options["verbosity"] >= 1:
            self.stdout.write(message)
