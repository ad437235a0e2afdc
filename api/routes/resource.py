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

from fastapi import Depends, Path, Query
from sqlalchemy import ColumnElement

from api.deps import Editor, PageDep, Viewer
from api.resources import Resource
from api.routes.router import PrefixRouter
from api.schemas.common import Envelope, InputModel, OutputModel, Page, PartialUpdate, ok
from api.schemas.common import error_responses as errors

Filters = Sequence[ColumnElement[bool]]


async def no_filters() -> Filters:
    # async: FastAPI would run a plain function in a worker thread, a hop per request.
    return ()


def resource_router(
    resource: Resource[Any],
    *,
    out: type[OutputModel],
    create: type[InputModel],
    update: type[PartialUpdate],
    filters: Callable[..., Awaitable[Filters]] = no_filters,
) -> PrefixRouter:
    """A router serving ``resource`` at ``/api/v1/<Label>`` (``/api/v1/Agent``), tagged
    ``<Label>``. ``filters``: a dependency that gives more conditions for the list (from
    its own query parameters)."""
    tag = resource.label.capitalize()
    said = {
        "create": f"Create {resource.one}",
        "list": f"List {resource.plural}",
        "get": f"Get {resource.one}",
        "delete": f"Delete {resource.one}",
        "update": f"Update {resource.one} (partial updates allowed)",
        **resource.summaries,
    }
    id_name = f"{resource.label}_id"
    ItemId = Annotated[int, Path(alias=id_name)]
    router = PrefixRouter(prefix=f"/api/v1/{tag}", tags=[tag], responses=errors(422))

    one = Envelope[out]  # type: ignore[valid-type]
    page_of = Envelope[Page[out]]  # type: ignore[valid-type]
    item_path = f"/{{{id_name}}}"
    label = resource.label

    # Reading needs the viewer role, every change the editor role (and whatever more the
    # resource asks of a particular change: ``Resource.authorize``).
    @router.post(
        "/",
        name=f"create_{label}",
        status_code=201,
        response_model=one,
        summary=said["create"],
        responses=errors(409),
    )
    async def create_item(body: create, editor: Editor) -> Envelope[Any]:  # type: ignore[valid-type]
        resource.authorize(editor.caller, None, dict(cast(InputModel, body)))
        item = await resource.create(editor.session, editor.workspace_id, body, editor.settings)
        return ok(out.model_validate(item))

    @router.get(
        "/",
        name=f"list_{resource.plural}",
        response_model=page_of,
        summary=said["list"],
    )
    async def list_items(
        viewer: Viewer,
        page: PageDep,
        where: Annotated[Filters, Depends(filters)],
        q: Annotated[
            str | None, Query(max_length=resource.name_max_length, description="Name contains.")
        ] = None,
    ) -> Envelope[Any]:
        session, workspace_id = viewer.session, viewer.workspace_id
        return ok(await resource.page(session, workspace_id, page, q, out.model_validate, where))

    @router.get(
        item_path,
        name=f"get_{label}",
        response_model=one,
        summary=said["get"],
        responses=errors(404),
    )
    async def get_item(item_id: ItemId, viewer: Viewer) -> Envelope[Any]:
        item = await resource.read(viewer.session, item_id, viewer.workspace_id)
        return ok(out.model_validate(item))

    @router.put(
        item_path,
        name=f"update_{label}",
        response_model=one,
        summary=said["update"],
        responses=errors(404, 409),
    )
    async def update_item(item_id: ItemId, body: update, editor: Editor) -> Envelope[Any]:  # type: ignore[valid-type]
        item = await resource.get(editor.session, item_id, editor.workspace_id)
        sent = cast(PartialUpdate, body).changes()
        resource.authorize(editor.caller, item, sent)
        await resource.update(editor.session, item, sent, editor.settings)
        return ok(out.model_validate(item))

    @router.delete(
        item_path,
        name=f"delete_{label}",
        response_model=Envelope[None],
        summary=said["delete"],
        responses=errors(404, 409),
    )
    async def delete_item(item_id: ItemId, editor: Editor) -> Envelope[Any]:
        item = await resource.get(editor.session, item_id, editor.workspace_id)
        await resource.delete(editor.session, item)
        return ok(None)

    return router
