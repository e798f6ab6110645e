"""The FastAPI application: routes under /v1, bearer-token auth, the job manager's lifecycle."""
from __future__ import annotations

import contextlib
from typing import AsyncIterator, List, Optional

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.responses import FileResponse

from ..auth import TokenTable
from ..config import ServerConfig
from ..jobs.errors import NotFound, Unauthorized
from ..jobs.limits import server_limits
from ..jobs.manager import JobManager
from ..jobs.pipeline_host import PipelineHost
from . import errors
from .body_limit import BodyLimit
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
    app.add_middleware(BodyLimit)
    errors.install(app)
    tokens = TokenTable.from_config(config)

    def current_user(authorization: Optional[str] = Header(None)) -> Optional[str]:
        """The caller's user name; None when the server has no tokens (everyone is one user)."""
        if not tokens.enabled:
            return None
        user = tokens.user_for(authorization)
        if user is None:
            raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <token>' (ask the server's "
                               "admin for one; the clients read VOID_TOKEN)", "Authorization")
        return user

    def owned(job_id: str, user: Optional[str] = Depends(current_user)) -> str:
        manager.check_access(job_id, user)
        return job_id

    public = APIRouter(prefix=PREFIX)
    jobs = APIRouter(prefix=PREFIX, dependencies=[Depends(current_user)])

    @public.get("/health", response_model=Health)
    def health(authorization: Optional[str] = Header(None)) -> Health:
        problem = host.problem or (host.loading_message if host.loading else None)
        # Public, so a load balancer or the Nuke node can ask before it has a token; but job ids, model paths and
        # the workers' folders are shown only to a caller with a valid token when the server has tokens.
        detailed = not tokens.enabled or tokens.user_for(authorization) is not None
        return Health(
            version=server_version(), pipeline=host.name, pipeline_label=host.label, ready=host.ready,
            problem=problem, gpus=gpu_info(import_torch=False),
            models=(host.pipeline.describe() if host.pipeline is not None else {}) if detailed else {},
            queue_length=manager.queue_length(), running=manager.running_ids() if detailed else [],
            detailed=detailed, limits=server_limits(config),
        )

    @jobs.post("/jobs", response_model=JobStatus, status_code=201)
    def create_job(spec: JobSpec, user: Optional[str] = Depends(current_user)) -> JobStatus:
        return manager.create(spec, owner=user)

    @jobs.get("/jobs", response_model=List[JobStatus])
    def list_jobs(user: Optional[str] = Depends(current_user)) -> List[JobStatus]:
        return manager.statuses(user)

    @jobs.get("/jobs/{job_id}", response_model=JobStatus)
    def job_status(job_id: str = Depends(owned)) -> JobStatus:
        return manager.status(job_id)

    @jobs.get("/jobs/{job_id}/inputs/{role}/{name}", response_model=UploadStatus)
    def upload_status(role: str, name: str, job_id: str = Depends(owned)) -> UploadStatus:
        return manager.upload_status(job_id, role, name)

    @jobs.put("/jobs/{job_id}/inputs/{role}/{name}", response_model=UploadStatus)
    async def upload(role: str, name: str, request: Request, job_id: str = Depends(owned)) -> UploadStatus:
        final = manager.upload_target(job_id, role, name, for_writing=True)
        h = request.headers
        size, complete, digest = await manager.uploads.receive(
            final, request.stream(), h.get("content-range"), h.get("content-length"), h.get("x-content-sha256"))
        return UploadStatus(role=role, name=name, size=size, complete=complete, sha256=digest)

    @jobs.post("/jobs/{job_id}/start", response_model=JobStatus)
    def start(job_id: str = Depends(owned)) -> JobStatus:
        return manager.start(job_id)

    @jobs.post("/jobs/{job_id}/cancel", response_model=JobStatus)
    def cancel(job_id: str = Depends(owned)) -> JobStatus:
        return manager.cancel(job_id)

    @jobs.delete("/jobs/{job_id}", status_code=204)
    def delete(job_id: str = Depends(owned)) -> Response:
        manager.delete(job_id)
        return Response(status_code=204)

    @jobs.get("/jobs/{job_id}/results", response_model=ResultList)
    def results(job_id: str = Depends(owned)) -> ResultList:
        return ResultList(job=job_id, files=[ResultFile(**f) for f in manager.results(job_id)])

    @jobs.get("/jobs/{job_id}/results/{name}")
    def result_file(name: str, job_id: str = Depends(owned)) -> FileResponse:
        # Starlette answers Range requests (206) itself, which is how a dropped download resumes.
        return FileResponse(manager.result_path(job_id, name), filename=name)

    app.include_router(public)
    app.include_router(jobs)

    @app.api_route("/{version}/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def unknown(version: str, rest: str) -> None:
        if version != API_VERSION:
            raise NotFound("unknown API version '%s': this server speaks %s; update the client or the server"
                           % (version, API_VERSION), "api_version")
        raise NotFound("no endpoint %s/%s" % (PREFIX, rest), "path")

    return app
