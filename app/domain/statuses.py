"""The states of a subject (a platform user as Lethe knows them) and of a project (a partnership)."""

from __future__ import annotations

from enum import StrEnum


class SubjectStatus(StrEnum):
    ACTIVE = "active"  # linked and visible
    HIDDEN = "hidden"  # a deletion request anonymised them: unlinkable for everyone, restorable in grace
    ERASED = "erased"  # purged: the link from the user id is destroyed for good


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    OFFBOARDING = "offboarding"  # the partnership ended: the offboarding job is deleting its data
    ENDED = "ended"  # everything deleted (except what holds kept)
