"""Actions on Runs and rules, each with the signed-in person's own identity.

A Run is changed by a merge patch (or a delete) sent with the person's bearer token: the API server's RBAC and
admission (the CRD schema, the operator's webhook) decide, and their refusal is shown as they worded it. Each
action done is recorded as an Event on the Run, also with the person's token (the console writes nothing as
itself), naming who did what; the operator's own events follow as it reacts. Rules are suspended or resumed at
the transfer service with the person's transfer-service token, given at sign-in.
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from sgs.kube import JSON, KubeClient, KubeError
from sgs.model.base import API_VERSION, GROUP, VERSION
from sgs_console.app import Console, ConsoleDep, SessionDep
from sgs_console.auth import Session, same_csrf
from sgs_console.upstream import UpstreamError

router = APIRouter()
RUN_ACTIONS = ("retry-failed", "priority", "suspend", "resume", "delete")
INSTANCE = socket.gethostname()


class ActionError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def run_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/runs/{name}"


def refused(error: KubeError) -> ActionError:
    """The API server's own words: RBAC's 'User "x" cannot patch resource ...', admission's field and reason."""
    if error.status == 403:
        return ActionError(403, f"refused by the API server (403 Forbidden): {error.message}")
    if error.status == 401:
        return ActionError(401, "the API server no longer accepts your token (401): sign in again")
    if error.status == 404:
        return ActionError(404, f"not found: {error.message}")
    return ActionError(error.status, f"refused by the API server ({error.status} {error.reason}): {error.message}")


async def record_event(client: KubeClient, run: JSON, reason: str, message: str) -> str | None:
    """An Event on the Run saying who did what through the console; None, or why it could not be written."""
    meta = run.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.console-{uuid.uuid4().hex[:10]}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "Run",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": "sgs-console"},
        "reportingComponent": "sgs-console",
        "reportingInstance": INSTANCE,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await client.create(f"/api/v1/namespaces/{meta.get('namespace')}/events", event)
    except KubeError as error:
        return f"the action was done, but its Event was refused ({error.status}): {error.message}"
    return None


async def act_on_run(client: KubeClient, session: Session, namespace: str, name: str, action: str, value: str) -> str:
    """Do one action; the message to show (and to put in the Event)."""
    try:
        run = await client.get(run_path(namespace, name))
    except KubeError as error:
        raise refused(error) from error
    spec = run.get("spec") or {}
    reason, patch, message = _plan(action, value, spec, session.user)
    try:
        if action == "delete":
            # Recorded first: after the delete there is no Run to attach it to.
            problem = await record_event(client, run, reason, message)
            await client.delete(run_path(namespace, name))
            return message + (f" ({problem})" if problem else "")
        run = await client.merge_patch(run_path(namespace, name), {"spec": patch})
    except KubeError as error:
        raise refused(error) from error
    problem = await record_event(client, run, reason, message)
    return message + (f" ({problem})" if problem else "")


def _plan(action: str, value: str, spec: dict[str, Any], user: str) -> tuple[str, dict[str, Any], str]:
    if action == "retry-failed":
        count = int(spec.get("retryFailed") or 0) + 1
        return "ConsoleRetryFailed", {"retryFailed": count}, f"{user}: retry failed tasks (request #{count})"
    if action == "priority":
        try:
            priority = int(value)
        except ValueError:
            raise ActionError(422, f"priority: {value!r} is not a whole number (-1000..1000)") from None
        old = int(spec.get("priority") or 0)
        return "ConsolePriority", {"priority": priority}, f"{user}: priority {old} → {priority}"
    if action == "suspend":
        return "ConsoleSuspend", {"suspend": True}, f"{user}: suspended (no new tasks start; running ones finish)"
    if action == "resume":
        return "ConsoleResume", {"suspend": False}, f"{user}: resumed"
    if action == "delete":
        return "ConsoleDelete", {}, f"{user}: deleted the Run"
    raise ActionError(404, f"no action {action!r}; choose from {', '.join(RUN_ACTIONS)}")


def answer(request: Request, console: Console, ok: bool, status: int, message: str, back: str) -> Response:
    """JSON for the page script; without it, the page the form came from with the message on top."""
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": ok, "message": message}, status_code=status)
    title = "Done" if ok else "Not done"
    return console.render(request, "error.html", status_code=status, title=title, message=message, back=back)


def check_csrf(session: Session, request: Request, form_token: str | None) -> None:
    if not same_csrf(session, request.headers.get("x-csrf-token") or form_token):
        raise ActionError(
            403, "this form is out of date or did not come from the console (CSRF check): reload the page"
        )


@router.post("/runs/{namespace}/{name}/actions/{action}")
async def run_action(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    namespace: str,
    name: str,
    action: str,
    value: Annotated[str, Form(max_length=32)] = "",
    csrf: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    back = f"/runs/{namespace}/{name}"
    client = console.sessions.client(session.token)
    try:
        check_csrf(session, request, csrf)
        message = await act_on_run(client, session, namespace, name, action, value)
    except ActionError as error:
        return answer(request, console, False, error.status, error.message, back)
    if action == "delete" and "application/json" not in request.headers.get("accept", ""):
        return RedirectResponse("/runs", status_code=303)
    return answer(request, console, True, 200, message, back)


@router.post("/transfers/rules/{rule_id}/{action}")
async def rule_action(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    rule_id: uuid.UUID,
    action: str,
    csrf: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    try:
        check_csrf(session, request, csrf)
        if action not in ("suspend", "resume"):
            raise ActionError(404, f"no rule action {action!r}; choose suspend or resume")
        if session.transfer_token is None:
            raise ActionError(403, "sign in with your transfer-service token to suspend or resume rules")
        rule = await console.transfer.call("POST", f"/rules/{rule_id}/{action}", token=session.transfer_token)
    except ActionError as error:
        return answer(request, console, False, error.status, error.message, "/transfers")
    except UpstreamError as error:
        return answer(request, console, False, *transfer_refusal(error), "/transfers")
    done = {"suspend": "suspended", "resume": "resumed"}[action]
    state = (rule or {}).get("state", "?") + (f": {rule['reason']}" if (rule or {}).get("reason") else "")
    message = f"{session.user}: rule {str(rule_id)[:8]} {done} at the transfer service (now {state})"
    return answer(request, console, True, 200, message, "/transfers")


def transfer_refusal(error: UpstreamError) -> tuple[int, str]:
    """The transfer service's own words (its token names the owner it checks), with what to do about a 401."""
    if error.status == 0:
        return 502, f"the transfer service did not answer: {error.message}"
    if error.status == 401:
        return (
            401,
            f"the transfer service does not accept your transfer-service token (401: {error.message}): sign in again",
        )
    status = error.status if error.status in (403, 404, 409, 422) else 502
    return status, f"refused by the transfer service ({error.status}): {error.message}"
