"""Dependency aliases shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from streams import StreamManager
from vms.config import Config
from vms.problems import Problem


def get_config(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


def get_manager(request: Request) -> StreamManager:
    manager: StreamManager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        raise Problem(503, "the relay is not running")
    return manager


ConfigDep = Annotated[Config, Depends(get_config)]
ManagerDep = Annotated[StreamManager, Depends(get_manager)]
