"""The FastAPI application: routes under /v1, bearer-token auth, the job manager's lifecycle."""
from __future__ import annotations

import contextlib
import hmac
from typing import AsyncIterator, List, Optional

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.responses import FileResponse

from ..config import ServerConfig
from ..jobs.errors import Unauthorized
from ..jobs.manager import JobManager
from ..jobs.pipeline_host import PipelineHost
from . import errors
from .health import gpu_info, server_version
from .models import API_VERSION, Health, JobSpec, JobStatus, ResultFile, ResultList, UploadStatus

PREFIX = "/" + API_VERSION


def create_app(config: ServerConfig, host: Optional[PipelineHost] = None) -> FastAPI:
    host = host or PipelineHost(config.pipeline, config)
    manager = JobManager(config, host)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if host.loading:
            host.start_loading()
        manager.launch()
        yield
        manager.shutdown()

    app = FastAPI(title="VOID for Nuke server", version=server_version(), lifespan=lifespan)
    app.state.manager = manager
    errors.install(app)

    def authorised(authorization: Optional[str] = Header(None)) -> None:
        if not config.token:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), config.token):
            raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <token>' (the server's --token / "
                               "VOID_TOKEN)", "Authorization")

    public = APIRouter(prefix=PREFIX)
    jobs = APIRouter(prefix=PREFIX, dependencies=[Depends(authorised)])

    @public.get("/health", response_model=Health)
    def health() -> Health:
        problem = host.problem or ("loading the '%s' pipeline" % host.name if host.loading else None)
        return Health(
            version=server_version(), pipeline=host.name, pipeline_label=host.label, ready=host.ready,
            problem=problem, gpus=gpu_info(import_torch=False),
            models=host.pipeline.describe() if host.pipeline is not None else {},
            queue_length=manager.queue_length(), running=manager.running_ids(),
        )

    @jobs.post("/jobs", response_model=JobStatus, status_code=201)
    def create_job(spec: JobSpec) -> JobStatus:
        return manager.create(spec)

    @jobs.get("/jobs", response_model=List[JobStatus])
    def list_jobs() -> List[JobStatus]:
        return manager.statuses()

    @jobs.get("/jobs/{job_id}", response_model=JobStatus)
    def job_status(job_id: str) -> JobStatus:
        return manager.status(job_id)

    @jobs.get("/jobs/{job_id}/inputs/{role}/{name}", response_model=UploadStatus)
    def upload_status(job_id: str, role: str, name: str) -> UploadStatus:
        return manager.upload_status(job_id, role, name)

    @jobs.put("/jobs/{job_id}/inputs/{role}/{name}", response_model=UploadStatus)
    async def upload(job_id: str, role: str, name: str, request: Request) -> UploadStatus:
        final = manager.upload_target(job_id, role, name, for_writing=True)
        h = request.headers
        size, complete, digest = await manager.uploads.receive(
            final, request.stream(), h.get("content-range"), h.get("content-length"), h.get("x-content-sha256"))
        return UploadStatus(role=role, name=name, size=size, complete=complete, sha256=digest)

    @jobs.post("/jobs/{job_id}/start", response_model=JobStatus)
    def start(job_id: str) -> JobStatus:
        return manager.start(job_id)

    @jobs.post("/jobs/{job_id}/cancel", response_model=JobStatus)
    def cancel(job_id: str) -> JobStatus:
        return manager.cancel(job_id)

    @jobs.delete("/jobs/{job_id}", status_code=204)
    def delete(job_id: str) -> Response:
        manager.delete(job_id)
        return Response(status_code=204)

    @jobs.get("/jobs/{job_id}/results", response_model=ResultList)
    def results(job_id: str) -> ResultList:
        return ResultList(job=job_id, files=[ResultFile(**f) for f in manager.results(job_id)])

    @jobs.get("/jobs/{job_id}/results/{name}")
    def result_file(job_id: str, name: str) -> FileResponse:
        # Starlette answers Range requests (206) itself, which is how a dropped download resumes.
        return FileResponse(manager.result_path(job_id, name), filename=name)

    app.include_router(public)
    app.include_router(jobs)
    return app
