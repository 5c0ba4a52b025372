"""The `/api/tasks` REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import error_of
from tests.seeding import b64, insert_tasks, task_owner, when

TASK_KEYS = {"id", "title", "notes", "completed", "created_at", "updated_at"}
TASK_NOT_FOUND = {"error": {"code": "not_found", "message": "Task not found."}}
NO_SUCH_RESOURCE = {"error": {"code": "not_found", "message": "No such resource."}}
BAD_CURSOR = {"error": {"code": "validation_error", "message": "cursor: not a cursor this server issued for this list"}}
EMPTY_PAGE = {"data": [], "next_cursor": None}


async def create(client, title: str = "A task", **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"title": title, **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def walk(client, query: str, limit: int) -> list[list[dict[str, Any]]]:
    """Follow next_cursor from the first page to the last; return the pages."""
    pages, cursor = [], None
    while True:
        url = f"/api/tasks?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor never ends"


# --- create ---------------------------------------------------------------------------------------------------------


async def test_create_returns_the_task(client):
    response = await client.post("/api/tasks", json={"title": "  Buy milk \n", "notes": "two litres"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == TASK_KEYS
    assert body["title"] == "Buy milk"
    assert body["notes"] == "two litres"
    assert body["completed"] is False
    uuid.UUID(body["id"])
    assert when(body["updated_at"]) >= when(body["created_at"])
    fetched = await client.get(f"/api/tasks/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_create_without_notes_and_completed(client):
    body = await create(client, "Only a title")
    assert body["notes"] is None
    assert body["completed"] is False
    done = await create(client, "Already done", completed=True)
    assert done["completed"] is True


@pytest.mark.parametrize("notes", ["", "   ", None])
async def test_blank_notes_are_stored_as_null(client, notes):
    body = await create(client, "t", notes=notes)
    assert body["notes"] is None


async def test_notes_are_trimmed(client):
    assert (await create(client, "t", notes="  keep me \n"))["notes"] == "keep me"


async def test_title_of_200_characters_is_accepted_even_with_padding(client):
    title = "x" * 200
    assert (await create(client, f"  {title}  "))["title"] == title


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"title": ""}, "title: String should have at least 1 character"),
        ({"title": "   \t\n"}, "title: String should have at least 1 character"),
        ({"title": "x" * 201}, "title: String should have at most 200 characters"),
        ({}, "title: Field required"),
        ({"title": None}, "title: Input should be a valid string"),
        ({"title": 42}, "title: Input should be a valid string"),
        ({"title": "ok", "notes": "n" * 4001}, "notes: String should have at most 4000 characters"),
        (
            {"title": "ok", "completed": "perhaps"},
            "completed: Input should be a valid boolean, unable to interpret input",
        ),
    ],
)
async def test_create_rejects_invalid_bodies(client, payload, message):
    response = await client.post("/api/tasks", json=payload)
    assert response.status_code == 422
    assert error_of(response) == {"error": {"code": "validation_error", "message": message}}
    assert (await client.get("/api/tasks")).json() == EMPTY_PAGE


async def test_create_refuses_an_id_or_owner_in_the_body(client, db):
    forged_id = str(uuid.uuid4())
    response = await client.post("/api/tasks", json={"title": "mine", "id": forged_id, "user_id": "someone-else"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "id: Extra inputs are not permitted; user_id: Extra inputs are not permitted"
    )
    assert await task_owner(db, uuid.UUID(forged_id)) is None
    assert (await client.get("/api/tasks")).json() == EMPTY_PAGE


# --- list -----------------------------------------------------------------------------------------------------------


async def test_list_is_empty_at_first(client):
    response = await client.get("/api/tasks")
    assert response.status_code == 200
    assert response.json() == EMPTY_PAGE


async def test_list_is_oldest_first(client):
    created = [await create(client, f"task {i}") for i in range(4)]
    listed = (await client.get("/api/tasks")).json()
    assert listed == {"data": created, "next_cursor": None}


async def test_list_filters_on_completed(client):
    open_1 = await create(client, "open 1")
    done_1 = await create(client, "done 1", completed=True)
    open_2 = await create(client, "open 2")
    done_2 = await create(client, "done 2", completed=True)
    done = (await client.get("/api/tasks?completed=true")).json()
    assert [t["id"] for t in done["data"]] == [done_1["id"], done_2["id"]]
    pending = (await client.get("/api/tasks?completed=false")).json()
    assert [t["id"] for t in pending["data"]] == [open_1["id"], open_2["id"]]
    everything = (await client.get("/api/tasks")).json()
    assert len(everything["data"]) == 4


async def test_completed_filter_rejects_non_booleans(client):
    response = await client.get("/api/tasks?completed=maybe")
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["message"].startswith("completed:")


async def test_exactly_one_page_has_no_next_cursor(client):
    created = [await create(client, f"t{i}") for i in range(3)]
    body = (await client.get("/api/tasks?limit=3")).json()
    assert [t["id"] for t in body["data"]] == [t["id"] for t in created]
    assert body["next_cursor"] is None


async def test_cursor_walks_to_the_end(client):
    created = [await create(client, f"t{i}") for i in range(5)]
    pages = await walk(client, "", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [t["id"] for page in pages for t in page] == [t["id"] for t in created]


async def test_cursor_when_the_last_page_is_full(client):
    created = [await create(client, f"t{i}") for i in range(4)]
    first = (await client.get("/api/tasks?limit=2")).json()
    second = (await client.get(f"/api/tasks?limit=2&cursor={first['next_cursor']}")).json()
    assert [t["id"] for t in first["data"] + second["data"]] == [t["id"] for t in created]
    assert first["next_cursor"] is not None
    assert second["next_cursor"] is None  # a full last page does not promise an empty one after it


async def test_cursor_walks_a_filtered_list(client):
    expected = []
    for i in range(7):
        task = await create(client, f"t{i}", completed=i % 2 == 0)
        if task["completed"]:
            expected.append(task["id"])
    pages = await walk(client, "&completed=true", limit=3)
    assert [len(page) for page in pages] == [3, 1]
    assert [t["id"] for page in pages for t in page] == expected


async def test_cursor_breaks_ties_on_equal_created_at(client, db):
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ids = await insert_tasks(
        db, [{"user_id": "local", "title": f"t{i}", "created_at": moment, "updated_at": moment} for i in range(7)]
    )
    pages = await walk(client, "", limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    walked = [t["id"] for page in pages for t in page]
    assert walked == [str(i) for i in sorted(ids, key=lambda u: u.int)]


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!!", id="garbage"),
        pytest.param("not-base64", id="not-base64"),
        pytest.param(b64(["x", "y"]), id="tampered"),
        pytest.param(b64(["2024-01-01T00:00:00+00:00"]), id="one-value"),
        pytest.param(b64(["2024-01-01T00:00:00+00:00", "not-a-uuid"]), id="bad-uuid"),
        pytest.param(b64(["2024-01-01T00:00:00", str(uuid.uuid4())]), id="naive-time"),
        pytest.param(b64([1, 2]), id="numbers"),
        pytest.param(b64({"a": 1}), id="object"),
        pytest.param(b64([5]), id="messages-cursor"),
        pytest.param(b64(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]), id="time-beyond-year-9999-in-utc"),
        pytest.param(b64(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]), id="time-before-year-1-in-utc"),
    ],
)
async def test_bad_cursor_is_rejected(client, cursor):
    await create(client)
    response = await client.get(f"/api/tasks?cursor={cursor}")
    assert response.status_code == 422
    assert error_of(response) == BAD_CURSOR


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
async def test_limit_out_of_range_names_limit(client, limit):
    response = await client.get(f"/api/tasks?limit={limit}")
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["message"].startswith("limit:")


async def test_limit_bounds_are_inclusive(client):
    await create(client)
    assert len((await client.get("/api/tasks?limit=1")).json()["data"]) == 1
    assert len((await client.get("/api/tasks?limit=100")).json()["data"]) == 1


# --- get ------------------------------------------------------------------------------------------------------------


async def test_get_missing_task_is_404(client):
    response = await client.get(f"/api/tasks/{uuid.uuid4()}")
    assert response.status_code == 404
    assert error_of(response) == TASK_NOT_FOUND


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("task_id", ["not-a-uuid", "00000000-0000-0000-0000-00000000000g"])
async def test_non_uuid_id_is_a_json_404(client, method, task_id):
    await create(client)
    response = await client.request(method, f"/api/tasks/{task_id}", json={"title": "x"} if method == "PATCH" else None)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert error_of(response) == NO_SUCH_RESOURCE
    assert len((await client.get("/api/tasks")).json()["data"]) == 1


# --- patch ----------------------------------------------------------------------------------------------------------


async def test_patch_title_keeps_the_other_fields(client):
    task = await create(client, "old", notes="keep", completed=True)
    response = await client.patch(f"/api/tasks/{task['id']}", json={"title": "  new  "})
    assert response.status_code == 200
    body = response.json()
    assert body == {**task, "title": "new", "updated_at": body["updated_at"]}
    assert (await client.get(f"/api/tasks/{task['id']}")).json() == body


async def test_patch_notes_only(client):
    task = await create(client, "title", notes="old")
    body = (await client.patch(f"/api/tasks/{task['id']}", json={"notes": "new"})).json()
    assert (body["title"], body["notes"], body["completed"]) == ("title", "new", False)


@pytest.mark.parametrize("notes", [None, "", "  "])
async def test_patch_clears_notes(client, notes):
    task = await create(client, "title", notes="old")
    response = await client.patch(f"/api/tasks/{task['id']}", json={"notes": notes})
    assert response.status_code == 200
    assert response.json()["notes"] is None
    assert (await client.get(f"/api/tasks/{task['id']}")).json()["notes"] is None


async def test_patch_toggles_completed_and_moves_updated_at(client):
    task = await create(client, "t")
    done = (await client.patch(f"/api/tasks/{task['id']}", json={"completed": True})).json()
    assert done["completed"] is True
    assert done["created_at"] == task["created_at"]
    assert when(done["updated_at"]) > when(task["updated_at"])
    reopened = (await client.patch(f"/api/tasks/{task['id']}", json={"completed": False})).json()
    assert reopened["completed"] is False
    assert when(reopened["updated_at"]) > when(done["updated_at"])
    assert (await client.get("/api/tasks?completed=false")).json()["data"] == [reopened]


async def test_patch_empty_body_changes_nothing_but_updated_at(client):
    task = await create(client, "t", notes="n")
    body = (await client.patch(f"/api/tasks/{task['id']}", json={})).json()
    assert {k: v for k, v in body.items() if k != "updated_at"} == {k: v for k, v in task.items() if k != "updated_at"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"title": "   "}, "title: String should have at least 1 character"),
        ({"title": ""}, "title: String should have at least 1 character"),
        ({"title": "x" * 201}, "title: String should have at most 200 characters"),
        ({"notes": "n" * 4001}, "notes: String should have at most 4000 characters"),
        ({"completed": "sometimes"}, "completed: Input should be a valid boolean, unable to interpret input"),
    ],
)
async def test_patch_rejects_invalid_values_and_leaves_the_task(client, payload, message):
    task = await create(client, "unchanged", notes="n")
    response = await client.patch(f"/api/tasks/{task['id']}", json=payload)
    assert response.status_code == 422
    assert error_of(response) == {"error": {"code": "validation_error", "message": message}}
    assert (await client.get(f"/api/tasks/{task['id']}")).json() == task


async def test_patch_missing_task_is_404(client):
    response = await client.patch(f"/api/tasks/{uuid.uuid4()}", json={"title": "x"})
    assert response.status_code == 404
    assert error_of(response) == TASK_NOT_FOUND


# --- delete ---------------------------------------------------------------------------------------------------------


async def test_delete_then_delete_again(client, db):
    keep = await create(client, "keep")
    task = await create(client, "drop")
    response = await client.delete(f"/api/tasks/{task['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert await task_owner(db, uuid.UUID(task["id"])) is None
    assert error_of(await client.get(f"/api/tasks/{task['id']}")) == TASK_NOT_FOUND
    again = await client.delete(f"/api/tasks/{task['id']}")
    assert again.status_code == 404
    assert error_of(again) == TASK_NOT_FOUND
    assert (await client.get("/api/tasks")).json() == {"data": [keep], "next_cursor": None}


@pytest.mark.parametrize("field", ["title", "completed"])
async def test_patch_with_a_null_required_field_is_422(client, field):
    created = (await client.post("/api/tasks", json={"title": "keep me"})).json()
    response = await client.patch(f"/api/tasks/{created['id']}", json={field: None})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert f"{field} may be omitted but not null" in response.json()["error"]["message"]
    unchanged = (await client.get(f"/api/tasks/{created['id']}")).json()
    assert (unchanged["title"], unchanged["completed"]) == ("keep me", False)


async def test_patch_with_null_notes_clears_them(client):
    created = (await client.post("/api/tasks", json={"title": "t", "notes": "n"})).json()
    response = await client.patch(f"/api/tasks/{created['id']}", json={"notes": None})
    assert response.status_code == 200
    assert response.json()["notes"] is None
