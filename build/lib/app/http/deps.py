"""The dependency every handler takes: the composition root, injected by name."""

from litestar.di import NamedDependency

from app.bootstrap import Container

ContainerDep = NamedDependency[Container]
