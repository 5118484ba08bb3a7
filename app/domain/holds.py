"""Regulatory holds: which holds cover which data, and whether they still stand (pure).

Holds always win: any step that alters or deletes data asks `covering` first and skips what a
standing hold covers. A hold stands from its commit until it is released or expires, plus the
policy's release delay (work resumes that long after the hold ends).

Holds keep exactly what they cover. A room or message hold takes the data it covers under its
own key (`sealed`); from then on a user's erasure goes ahead around it and the held values stay
readable (`keeps`). A user or project hold covers the whole user, and so does a room or message
hold whose data is not sealed yet: those stop the request (`stops`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class Scope(StrEnum):
    USER = "user"  # target: a platform user id
    ROOM = "room"  # target: a room id
    MESSAGE = "message"  # target: a message id
    PROJECT = "project"  # target: the project's name: everything in it


# Room and message holds take what they cover under their own key; user and project holds
# cover whole users and stop their requests instead.
KEYED_SCOPES = frozenset({Scope.ROOM, Scope.MESSAGE})


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    project: str
    scope: Scope
    target: str
    placed_at: datetime
    expires_at: datetime | None = None
    released_at: datetime | None = None
    sealed: bool = False  # its covered data is under the hold's own key (room and message holds)

    def ends_at(self) -> datetime | None:
        ends = [t for t in (self.released_at, self.expires_at) if t is not None]
        return min(ends) if ends else None

    def stands(self, now: datetime, release_delay: timedelta = timedelta(0)) -> bool:
        """Whether the hold still blocks work as of `now`. A hold stands from the moment it is
        committed, whatever the job's clock says: a worker whose clock lags the API's (or a
        job run `--now` in the past) must see a hold placed "after" its now."""
        ends = self.ends_at()
        return ends is None or now < ends + release_delay


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of data described by what holds can name."""

    project: str
    user_ids: frozenset[str] = field(default_factory=frozenset)
    rooms: frozenset[str] = field(default_factory=frozenset)
    messages: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def message(cls, project: str, author: str | None, room: str | None, message_id: str) -> Data:
        """One chat message, as user, room and message holds can name it."""
        return cls(project, frozenset({author} if author else ()), frozenset({room} if room else ()),
                   frozenset({message_id}))


def covers(hold: Hold, data: Data) -> bool:
    if hold.project != data.project:
        return False
    match hold.scope:
        case Scope.PROJECT:
            return True
        case Scope.USER:
            return hold.target in data.user_ids
        case Scope.ROOM:
            return hold.target in data.rooms
        case Scope.MESSAGE:
            return hold.target in data.messages


def stops(hold: Hold) -> bool:
    """Whether a covering hold stops a user's erasure as a whole (else it keeps its part)."""
    return hold.scope not in KEYED_SCOPES or not hold.sealed


def covering(holds: Iterable[Hold], data: Data, now: datetime, release_delay: timedelta = timedelta(0)) -> list[Hold]:
    """The standing holds that cover `data` (empty: the step may go ahead)."""
    return [h for h in holds if h.stands(now, release_delay) and covers(h, data)]


def keeper(holds: Iterable[Hold], data: Data, now: datetime,
           release_delay: timedelta = timedelta(0)) -> Hold | None:
    """The room or message hold whose key takes new `data` at the door: the first standing one
    that covers it, in the order holds take their data (placement), or None."""
    return next((h for h in covering(holds, data, now, release_delay) if h.scope in KEYED_SCOPES), None)


def split(pieces: Iterable[tuple[T, Data]], holds: Sequence[Hold], now: datetime,
          release_delay: timedelta = timedelta(0)) -> tuple[list[T], list[T]]:
    """(free, held): the pieces no standing hold covers, which a step may alter or delete, and
    the ones a hold keeps. Every job divides data this way before it touches any."""
    free: list[T] = []
    held: list[T] = []
    for piece, data in pieces:
        (held if covering(holds, data, now, release_delay) else free).append(piece)
    return free, held
