"""/v1/files and /v1/batches, as OpenAI answers them (object shapes, pagination, 404 wording).

Tenancy: with API keys on, a key sees, reads, deletes and cancels only what it created (the
admin key sees everything); another key's object is a 404, as if it did not exist.
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ValidationError

from gateway.auth import Client, KeyRing
from gateway.batches.objects import BatchCreate, BatchObject, FileDeleted, FileObject, ListPage, new_id
from gateway.batches.service import BatchService
from gateway.batches.store import StoredBatch, StoredFile, now
from gateway.batches.upload import receive_upload
from gateway.errors import GatewayError, invalid_field

_CANCELLABLE = ("validating", "in_progress")


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _page(items: list[FileObject] | list[BatchObject], has_more: bool) -> Response:
    return _json(
        ListPage(
            data=items,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
            has_more=has_more,
        )
    )


_MAX_CREATE_BYTES = 64 * 1024


async def _small_body(request: Request) -> bytes:
    """A JSON request body of at most 64 KB (a batch create is a few hundred bytes): 413 past it,
    without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_CREATE_BYTES:
        raise GatewayError(413, f"request body is over the limit of {_MAX_CREATE_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_CREATE_BYTES:
            raise GatewayError(413, f"request body is over the limit of {_MAX_CREATE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def batch_routes(service: BatchService, keyring: KeyRing) -> APIRouter:
    router = APIRouter()

    def caller(request: Request) -> Client:
        return keyring.authenticate(request.headers.get("authorization"))

    def scope_of(client: Client) -> str | None:
        """The owner whose objects `client` may list: its own, or everyone's for an admin."""
        return None if client.admin else client.name

    def visible_file(client: Client, file_id: str) -> StoredFile:
        found = service.runner().store.get_file(file_id)
        if found is None or (not client.admin and found.owner != client.name):
            raise GatewayError(404, f"No such File object: {file_id}", param="id")
        return found

    def visible_batch(client: Client, batch_id: str) -> StoredBatch:
        found = service.runner().store.get_batch(batch_id)
        if found is None or (not client.admin and found.owner != client.name):
            raise GatewayError(404, f"No batch found with id '{batch_id}'.", param="id")
        return found

    @router.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        client = caller(request)
        store = service.runner().store
        destination = store.upload_path()
        upload = await receive_upload(request, service.settings, destination)
        file = FileObject(
            id=new_id("file-"), bytes=upload.size, created_at=now(), filename=upload.filename, purpose="batch"
        )
        store.add_file(file, client.name, destination)
        return _json(file)

    @router.get("/v1/files")
    async def list_files(
        request: Request,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = Query(10_000, ge=1, le=10_000),
        order: Literal["asc", "desc"] = "desc",
    ) -> Response:
        client = caller(request)
        files, more = service.runner().store.list_files(scope_of(client), purpose, after, limit, order)
        return _page(files, more)

    @router.get("/v1/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> Response:
        return _json(visible_file(caller(request), file_id).file)

    @router.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Response:
        found = visible_file(caller(request), file_id)
        return FileResponse(found.path, media_type="application/octet-stream", filename=found.file.filename)

    @router.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> Response:
        visible_file(caller(request), file_id)
        service.runner().store.delete_file(file_id)
        return _json(FileDeleted(id=file_id))

    @router.post("/v1/batches")
    async def create_batch(request: Request) -> Response:
        client = caller(request)
        runner = service.runner()
        try:
            create = BatchCreate.model_validate_json(await _small_body(request))
        except ValidationError as exc:
            raise invalid_field(exc) from None
        source = visible_file(client, create.input_file_id)
        if source.file.purpose != "batch":
            raise GatewayError(400, f"file {create.input_file_id} was not uploaded with purpose 'batch'")
        created = now()
        batch = BatchObject(
            id=new_id("batch_"),
            endpoint=create.endpoint,
            input_file_id=create.input_file_id,
            completion_window=create.completion_window,
            status="validating",
            created_at=created,
            expires_at=int(time.time() + service.settings.completion_window_s),
            metadata=create.metadata,
        )
        runner.store.create_batch(batch, client.name)
        runner.submit(batch.id)
        return _json(batch)

    @router.get("/v1/batches")
    async def list_batches(
        request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)
    ) -> Response:
        batches, more = service.runner().store.list_batches(scope_of(caller(request)), after, limit)
        return _page(batches, more)

    @router.get("/v1/batches/{batch_id}")
    async def get_batch(request: Request, batch_id: str) -> Response:
        return _json(visible_batch(caller(request), batch_id).batch)

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> Response:
        batch = visible_batch(caller(request), batch_id).batch
        if batch.status in ("cancelling", "cancelled"):
            return _json(batch)
        if batch.status not in _CANCELLABLE:
            raise GatewayError(409, f"Cannot cancel a batch with status '{batch.status}'.")
        return _json(service.runner().cancel(batch_id))

    return router
