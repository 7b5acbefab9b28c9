"""The contract checks of `make lint` (scripts/buf-check.sh, buf lint and buf breaking), on
scratch copies of proto/: a renumbered field and a removed method fail, against the original
documents' contracts and against the previous commit; additive changes pass."""

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

BUF = ROOT / ".tools" / "bin" / "buf"
CHECK = ROOT / "scripts" / "buf-check.sh"
MOVIE = "proto/api/movie.proto"
SOCCER = "proto/api/soccer.proto"

Edit = Callable[[str], str]


def git(workspace: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=workspace, check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """This checkout's buf.yaml, proto/ and baseline, committed once in a git repository of
    their own (the previous commit the check compares with)."""
    assert BUF.exists(), f"{BUF} missing: run `make buf`"
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "contracts" / "baseline", tmp_path / "contracts" / "baseline")
    git(tmp_path, "init", "--quiet")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "--quiet", "-m", "published")
    return tmp_path


def edit(workspace: Path, path: str, old: str, new: str, *, commit: bool = True) -> None:
    file = workspace / path
    text = file.read_text()
    assert old in text, f"{old!r} not in {path}"
    file.write_text(text.replace(old, new, 1))
    if commit:
        git(workspace, "commit", "--quiet", "-am", "changed")


def check(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK), str(workspace)], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_projects_own_contracts_pass() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unchanged_copy_passes_and_says_when_there_is_no_previous_commit(
    workspace: Path,
) -> None:
    result = check(workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no previous commit" in result.stderr  # one commit: the baseline alone


def test_a_renumbered_field_fails_against_both(workspace: Path) -> None:
    edit(workspace, MOVIE, "string director = 3;", "string director = 5;")
    result = check(workspace)
    assert result.returncode != 0
    assert 'field "3" with name "director"' in result.stdout
    assert "breaks the original contracts" in result.stderr
    assert "breaks the previous commit's" in result.stderr


def test_a_removed_method_fails_against_both(workspace: Path) -> None:
    edit(workspace, MOVIE, "  rpc GetListMovies(Empty) returns (stream MovieData);\n", "")
    result = check(workspace)
    assert result.returncode != 0
    assert 'Previously present RPC "GetListMovies" on service "Movie" was deleted' in (
        result.stdout
    )
    assert "breaks the original contracts" in result.stderr
    assert "breaks the previous commit's" in result.stderr


def test_a_method_added_since_the_documents_is_kept_by_the_previous_commit(
    workspace: Path,
) -> None:
    """GetMovieByTitle is not in the original documents, but it is published: removing it
    passes the baseline and fails against the previous commit."""
    start = "  // Additive: exact, case-insensitive title lookup.\n"
    edit(workspace, MOVIE, start + "  rpc GetMovieByTitle(MovieTitle) returns (MovieData);\n", "")
    result = check(workspace)
    assert result.returncode != 0
    assert '"GetMovieByTitle" on service "Movie" was deleted' in result.stdout
    assert "breaks the original contracts" not in result.stderr
    assert "breaks the previous commit's" in result.stderr


def test_an_uncommitted_change_of_a_streaming_shape_fails(workspace: Path) -> None:
    git(workspace, "commit", "--quiet", "--allow-empty", "-m", "second")
    edit(
        workspace, SOCCER, "rpc Watch(Match) returns (stream Video);",
        "rpc Watch(Match) returns (Video);", commit=False,
    )  # fmt: skip
    result = check(workspace)
    assert result.returncode != 0
    assert "server streaming" in result.stdout


def test_additive_changes_pass_against_both(workspace: Path) -> None:
    edit(
        workspace, SOCCER, "  bool unpaced = 6;\n",
        "  bool unpaced = 6;\n  // Added.\n  string camera = 7;\n", commit=False,
    )  # fmt: skip
    edit(
        workspace, MOVIE, "service Movie {\n",
        "service Movie {\n  // Added.\n  rpc GetMovieCount(Empty) returns (MovieCount);\n",
        commit=False,
    )  # fmt: skip
    (workspace / MOVIE).write_text(
        (workspace / MOVIE).read_text() + "\nmessage MovieCount {\n  int32 count = 1;\n}\n"
    )
    git(workspace, "commit", "--quiet", "-am", "additive")
    result = check(workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no previous commit" not in result.stderr


def test_lint_refuses_a_new_contract_that_breaks_the_style(workspace: Path) -> None:
    """The exceptions are for the fixed contracts alone: a new file gets every rule."""
    (workspace / "proto" / "api" / "extra").mkdir()
    (workspace / "proto" / "api" / "extra" / "extra.proto").write_text(
        'syntax = "proto3";\npackage api.extra.v1;\nservice Extra {\n'
        "  rpc Get(Thing) returns (Thing);\n}\nmessage Thing {\n  string id = 1;\n}\n"
    )
    result = check(workspace)
    assert result.returncode != 0
    assert 'Service name "Extra" should be suffixed with "Service"' in result.stdout
    assert "buf lint failed" in result.stderr
