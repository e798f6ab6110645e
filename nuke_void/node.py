"""The VOID node's buttons: Remove, Cancel, Check server. Thin: the work is in the modules it calls.

Threads: Remove validates and renders on the main thread (Nuke's own render progress and Cancel), then a worker
thread uploads, waits and downloads through nuke_void.client, reporting on a nuke.ProgressTask (Foundry's
threading example does the same). Anything that touches nodes or knobs goes through nuke.executeInMainThread and
finds the VOID node again by name. In a terminal session (no GUI) the same steps run synchronously.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import nuke

from . import jobspec, progress, render, results, settings, validation, versioning

try:
    from dataclasses import dataclass, field
except ImportError:  # pragma: no cover
    raise

HEALTH_TIMEOUT = 5.0
CANCEL_WAIT = 30.0  # seconds to wait for the server to confirm a cancel


class UserError(Exception):
    """Something the compositor can fix; shown as is."""


@dataclass
class Job:
    node: str  # the VOID node's fullName(): node objects must not cross threads
    server: str
    spec: Dict[str, object]
    files: Dict[str, List[str]]
    version_dir: str
    prompt: str
    stop: threading.Event = field(default_factory=threading.Event)
    job_id: Optional[str] = None
    thread: Optional[threading.Thread] = None


_jobs = {}  # type: Dict[str, Job]


# --- helpers -------------------------------------------------------------------------------------------------

def _on_main(fn: Callable[..., Any], *args: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        fn(*args)
    else:
        nuke.executeInMainThread(fn, args)


def _set_status(node_name: str, text: str) -> None:
    node = nuke.toNode(node_name)
    if node is not None:
        node["status"].setValue(text)


def _tell(node_name: str, text: str, popup: bool = True) -> None:
    _set_status(node_name, text.splitlines()[-1] if text else "")
    if popup and nuke.GUI:
        nuke.message(text)
    else:
        print("VOID %s: %s" % (node_name, text))


def token() -> Optional[str]:
    """VOID_TOKEN from the environment, else a `void_token` knob a studio added to Nuke's preferences."""
    value = settings.token_from_env()
    if value:
        return value
    prefs = nuke.toNode("preferences")
    knob = prefs.knob("void_token") if prefs is not None else None
    return (knob.value() or "").strip() or None if knob is not None else None


def _client(server: str, **kwargs: Any):
    from . import client

    return client.VoidClient(server, token=token(), **kwargs)


def _settings(node) -> settings.Settings:
    return settings.Settings.from_values({name: node[name].value() for name in settings.KNOBS})


def _channels_of(node, index: int) -> List[str]:
    source = node.input(index)
    try:
        return list(source.channels()) if source is not None else []
    except Exception:  # noqa: BLE001 - an upstream error shows up at render time with Nuke's message
        return []


def _output_root(node, s: settings.Settings) -> Optional[str]:
    if s.output_dir:
        return s.output_dir
    return versioning.default_output_root(nuke.root()["name"].value(), node.name())


def gather_facts(node, s: settings.Settings) -> validation.Facts:
    source = node.input(0)
    first = last = None
    if source is not None:
        first, last = source.firstFrame(), source.lastFrame()
    range_first, range_last = s.frame_range(first, last)
    return validation.Facts(
        source_connected=source is not None,
        target_connected=node.input(1) is not None,
        affected_connected=node.input(2) is not None,
        mask_mode=s.mask_mode,
        input_first=first, input_last=last, first=range_first, last=range_last,
        prompt=s.prompt, server=s.server, output_root=_output_root(node, s),
        target_channel=s.target_channel, target_channels=_channels_of(node, 1),
        affected_channel=s.affected_channel, affected_channels=_channels_of(node, 2),
        busy=node.fullName() in _jobs,
        speed=s.speed, memory_mode=s.memory_mode,
    )


def _source_size(node) -> Tuple[int, int]:
    """The Source input's width and height; (0, 0) where Nuke cannot say (the render then reports the error)."""
    try:
        source = node.input(0)
        return int(source.width()), int(source.height())
    except Exception:  # noqa: BLE001 - an upstream error shows up at render time with Nuke's message
        return 0, 0


def _check_health(server: str) -> Dict[str, Any]:
    from . import client

    try:
        health = _client(server, timeout=HEALTH_TIMEOUT, retries=1).health()
    except client.VoidError as e:
        raise UserError(validation.server_unreachable(server, getattr(e, "message", str(e))))
    if not health.get("ready", False):
        raise UserError(validation.server_not_ready(server, health.get("problem")))
    return health


# --- buttons -------------------------------------------------------------------------------------------------

def check_server(node=None) -> None:
    node = node or nuke.thisNode()
    server = _settings(node).server
    try:
        health = _check_health(server)
    except UserError as e:
        _tell(node.fullName(), str(e))
        return
    gpus = ", ".join(str(g.get("name", "GPU")) for g in health.get("gpus", [])) or "no GPU reported"
    _tell(node.fullName(), "Server ready: %s (%s), %s; %d job(s) queued." % (
        health.get("pipeline_label", health.get("pipeline")), health.get("version", "?"), gpus,
        int(health.get("queue_length", 0))), popup=True)


def cancel(node=None) -> None:
    node = node or nuke.thisNode()
    job = _jobs.get(node.fullName())
    if job is None:
        _set_status(node.fullName(), "Nothing to cancel")
        return
    job.stop.set()
    _set_status(node.fullName(), "Cancelling...")


def remove(node=None) -> Optional[Job]:
    """The Remove button. Returns the started job (tests join its thread), or None when nothing started."""
    node = node or nuke.thisNode()
    name = node.fullName()
    try:
        job = _prepare(node)
    except UserError as e:
        _tell(name, str(e))
        return None
    _jobs[name] = job
    if nuke.GUI:
        job.thread = threading.Thread(target=_work, args=(job,), name="VOID " + name)
        job.thread.daemon = True
        job.thread.start()
    else:
        _work(job)
    return job


def _prepare(node) -> Job:
    s = _settings(node)
    facts = gather_facts(node, s)
    found = validation.problems(facts)
    if found:
        raise UserError(validation.format_problems(found))
    health = _check_health(s.server)
    found = validation.server_limit_problems(facts.first, facts.last, *_source_size(node), health.get("limits") or {})
    if found:  # before a render that the server would refuse afterwards
        raise UserError(validation.format_problems(found))
    version_dir = versioning.claim_next_version(facts.output_root or "")
    inputs_dir = os.path.join(version_dir, "inputs")
    sources = [("plate", 0, None), ("target", 1, s.target_channel)]
    if s.mask_mode == "manual":
        sources.append(("affected", 2, s.affected_channel))
    _set_status(node.fullName(), "Rendering plate and mattes %d-%d..." % (facts.first, facts.last))
    try:
        files = render.render_inputs(node, facts.first, facts.last, inputs_dir, sources)
        if render.matte_has_signal(files["target"], s.target_channel) is False:
            raise UserError(validation.empty_matte(facts.first, facts.last, s.target_channel))
        spec = s.build_spec(facts.first, facts.last, files, fps=nuke.root().realFps(),
                            client="Nuke %s, %s" % (nuke.NUKE_VERSION_STRING, os.path.basename(
                                nuke.root()["name"].value() or "untitled")))
    except RuntimeError as e:  # Nuke reports render errors and the render's Cancel as RuntimeError
        shutil.rmtree(version_dir, ignore_errors=True)
        if "cancel" in str(e).lower():
            raise UserError("Render cancelled; nothing was sent.")
        raise UserError("Rendering the inputs failed: %s" % e)
    except jobspec.SpecError as e:  # a knob value the checks above let through: say which, send nothing
        shutil.rmtree(version_dir, ignore_errors=True)
        raise UserError(str(e))
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)  # only our own, just-created, empty version
        raise
    return Job(node=node.fullName(), server=s.server, spec=spec, files=files, version_dir=version_dir,
               prompt=s.prompt)


# --- worker --------------------------------------------------------------------------------------------------

def _work(job: Job) -> None:
    from . import client as void_client

    task = nuke.ProgressTask("VOID %s" % job.node)
    cancelled = lambda: job.stop.is_set() or task.isCancelled()  # noqa: E731

    def show(percent: int, text: str) -> None:
        task.setProgress(max(0, min(100, percent)))
        task.setMessage(text)
        _on_main(_set_status, job.node, text)

    def on_transfer(label: str) -> Callable[..., None]:
        def report(*args: Any) -> None:
            numbers = [a for a in args if isinstance(a, (int, float))]
            if len(numbers) >= 2:
                show(*progress.transfer(label, int(numbers[-2]), int(numbers[-1])))
        return report

    try:
        show(0, "Uploading plate and mattes...")
        vc = _client(job.server)
        job.job_id = vc.submit(job.spec, job.files, progress=on_transfer("Uploading"))
        status = {"state": "queued"}  # type: Dict[str, Any]
        if not cancelled():
            status = vc.wait(job.job_id, on_status=lambda st: show(*progress.describe(st)), poll=1.0,
                             should_stop=cancelled)
        if cancelled() and status.get("state") not in ("succeeded", "failed", "cancelled"):
            vc.cancel(job.job_id)
            state = _settled_state(vc, job.job_id)
            if state == "cancelled":
                text = "Cancelled: the server job %s was stopped." % job.job_id
            elif state in ("succeeded", "failed"):  # it ended before the cancel arrived; nothing is downloaded
                text = "Cancelled here; the server job %s had already %s (results not fetched)." % (job.job_id, state)
            else:
                text = "Cancel sent; the server job %s is still %s." % (job.job_id, state)
            _on_main(_tell, job.node, text, False)
            return
        if status.get("state") != "succeeded":
            _on_main(_tell, job.node, progress.describe(status)[1])
            return
        show(100, "Downloading results...")
        vc.download_results(job.job_id, job.version_dir, progress=on_transfer("Downloading"))
        shutil.rmtree(os.path.join(job.version_dir, "inputs"), ignore_errors=True)
        _on_main(_finish, job, list(status.get("notes") or []))
    except void_client.JobCancelledError:
        _on_main(_tell, job.node, "Cancelled.", False)
    except void_client.VoidError as e:
        _on_main(_tell, job.node, "VOID failed: %s" % getattr(e, "message", str(e)))
    except Exception as e:  # noqa: BLE001 - report, never die silently in a thread
        traceback.print_exc()
        _on_main(_tell, job.node, "VOID failed unexpectedly: %s" % e)
    finally:
        _jobs.pop(job.node, None)
        del task  # closes the progress bar


def _settled_state(vc: Any, job_id: str, timeout: float = CANCEL_WAIT) -> str:
    """The job's state once the server has acted on a cancel (it stops at its next step), or as it is at timeout."""
    deadline = time.time() + timeout
    while True:
        state = str(vc.status(job_id).get("state"))
        if state in ("succeeded", "failed", "cancelled") or time.time() > deadline:
            return state
        time.sleep(0.5)


def _finish(job: Job, notes: List[str]) -> None:
    node = nuke.toNode(job.node)
    version = os.path.basename(job.version_dir)
    if node is None:
        print("VOID: %s was deleted; results are in %s" % (job.node, job.version_dir))
        return
    try:
        manifest = results.load_manifest(job.version_dir)
        nuke.Undo.begin("VOID results %s" % version)
        try:
            results.create_nodes(node, job.version_dir, manifest, version, job.prompt)
        finally:
            nuke.Undo.end()
    except results.ResultsError as e:
        _tell(job.node, str(e))
        return
    text = "Done: %s in %s" % (version, job.version_dir)
    _set_status(job.node, text + ("" if not notes else " (%s)" % "; ".join(notes)))
