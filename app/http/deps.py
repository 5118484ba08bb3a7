"""The dependency every handler takes: the composition root (not validated: it is ours)."""

from typing import Annotated

from litestar.params import Dependency

from app.bootstrap import Container

ContainerDep = Annotated[Container, Dependency(skip_validation=True)]
