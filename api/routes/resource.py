"""The routes every named resource serves the same way: create, list (with ``q``), get,
partial update and delete, over a ``Resource`` that holds what is special to its kind.

Each route is named as a hand-written one would be (``list_agents``, path parameter
``agent_id``), so the OpenAPI document and error locations read the same for every
resource. A resource's module adds its own further routes (a tool's test, a workflow's
publish and versions) to the router this returns.

(No ``from __future__ import annotations`` here: FastAPI reads the annotations of the
functions below at runtime, and they use this function's arguments.)
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import ColumnElement

from api.deps import EditorDep, PageDep, SessionDep, SettingsDep, ViewerWorkspaceDep
from api.resources import Resource
from api.schemas.common import Envelope, InputModel, OutputModel, Page, PartialUpdate, ok
from api.schemas.common import error_responses as errors

Filters = Sequence[ColumnElement[bool]]


async def no_filters() -> Filters:
    # async: FastAPI would run a plain function in a worker thread, a hop per request.
    return ()


def resource_router(
    resource: Resource[Any],
    *,
    prefix: str,
    tag: str,
    out: type[OutputModel],
    create: type[InputModel],
    update: type[PartialUpdate],
    name_max_length: int,
    filters: Callable[..., Awaitable[Filters]] = no_filters,
    summaries: dict[str, str] | None = None,
) -> APIRouter:
    """A router at ``prefix`` serving ``resource``. ``filters``: a dependency that gives
    more conditions for the list (from its own query parameters); ``summaries``: the
    OpenAPI summary of a route ("create", "update", "delete") where the default won't do."""
    said = {
        "create": f"Create {resource.one}",
        "list": f"List {resource.plural}",
        "get": f"Get {resource.one}",
        "delete": f"Delete {resource.one}",
        "update": f"Update {resource.one} (partial updates allowed)",
        **(summaries or {}),
    }
    id_name = f"{resource.label}_id"
    ItemId = Annotated[int, Path(alias=id_name)]
    router = APIRouter(prefix=prefix, tags=[tag], responses=errors(422))

    # Reading needs the viewer role, every change the editor role (and whatever more the
    # resource asks of a particular change: ``Resource.authorize``).
    async def create_item(
        body: create,  # type: ignore[valid-type]
        session: SessionDep,
        settings: SettingsDep,
        caller: EditorDep,
    ) -> dict[str, Any]:
        resource.authorize(caller, None, dict(cast(InputModel, body)))
        item = await resource.create(session, caller.workspace_id, body, settings)
        return ok(out.model_validate(item))

    async def list_items(
        session: SessionDep,
        workspace_id: ViewerWorkspaceDep,
        page: PageDep,
        where: Annotated[Filters, Depends(filters)],
        q: Annotated[
            str | None, Query(max_length=name_max_length, description="Name contains.")
        ] = None,
    ) -> dict[str, Any]:
        return ok(await resource.page(session, workspace_id, page, q, out.model_validate, where))

    async def get_item(
        item_id: ItemId, session: SessionDep, workspace_id: ViewerWorkspaceDep
    ) -> dict[str, Any]:
        return ok(out.model_validate(await resource.get(session, item_id, workspace_id)))

    async def update_item(
        item_id: ItemId,
        body: update,  # type: ignore[valid-type]
        session: SessionDep,
        settings: SettingsDep,
        caller: EditorDep,
    ) -> dict[str, Any]:
        item = await resource.get(session, item_id, caller.workspace_id)
        sent = cast(PartialUpdate, body).changes()
        resource.authorize(caller, item, sent)
        await resource.update(session, item, sent, settings)
        return ok(out.model_validate(item))

    async def delete_item(
        item_id: ItemId, session: SessionDep, caller: EditorDep
    ) -> dict[str, Any]:
        await resource.delete(session, await resource.get(session, item_id, caller.workspace_id))
        return ok(None)

    one = Envelope[out]  # type: ignore[valid-type]
    item_path = f"/{{{id_name}}}"
    router.add_api_route(
        "/",
        create_item,
        methods=["POST"],
        name=f"create_{resource.label}",
        status_code=201,
        response_model=one,
        summary=said["create"],
        responses=errors(409),
    )
    router.add_api_route(
        "/",
        list_items,
        methods=["GET"],
        name=f"list_{resource.plural}",
        response_model=Envelope[Page[out]],  # type: ignore[valid-type]
        summary=said["list"],
    )
    router.add_api_route(
        item_path,
        get_item,
        methods=["GET"],
        name=f"get_{resource.label}",
        response_model=one,
        summary=said["get"],
        responses=errors(404),
    )
    router.add_api_route(
        item_path,
        update_item,
        methods=["PUT"],
        name=f"update_{resource.label}",
        response_model=one,
        summary=said["update"],
        responses=errors(404, 409),
    )
    router.add_api_route(
        item_path,
        delete_item,
        methods=["DELETE"],
        name=f"delete_{resource.label}",
        response_model=Envelope[None],
        summary=said["delete"],
        responses=errors(404, 409),
    )
    return router
