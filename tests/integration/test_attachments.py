"""Campaign-wide files on SQLite and PostgreSQL: storing, caps, names, drafts only,
copies between versions, and files deleted only when the last row goes (after commit)."""

from __future__ import annotations

import io

import pytest
from sqlmodel import select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import Campaign, CampaignAttachment, CampaignVersion, Source
from mailer_app.services import InvalidInput, NotFoundError
from mailer_app.services import attachments as att
from mailer_app.services.workspaces import create_workspace
from mailer_app.settings import get_settings

PDF = b"%PDF-1.4\n" + b"x" * 2_000


def _version(session, workspace_id: int, *, number: int = 1, draft: bool = True, campaign_id=None):
    if campaign_id is None:
        campaign = Campaign(workspace_id=workspace_id, name="Spring", source=Source.UI)
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    version = CampaignVersion(
        workspace_id=workspace_id, campaign_id=campaign_id, number=number, is_draft=draft
    )
    session.add(version)
    session.flush()
    return version


@pytest.fixture
def setup(session):
    workspace = create_workspace(session=session, name="Files Inc", source=Source.UI)
    other = create_workspace(session=session, name="Someone Else", source=Source.UI)
    version = _version(session, workspace.id)
    session.commit()
    return workspace.id, other.id, version


def store(session, workspace_id, version_id, filename="invoice.pdf", data=PDF, **kw):
    kw.setdefault("content_type", None)
    return att.store_campaign_file(
        session=session,
        workspace_id=workspace_id,
        version_id=version_id,
        filename=filename,
        data=data,
        user_id=None,
        **kw,
    )


def test_store_list_and_read_a_file(session, setup):
    workspace_id, _, version = setup
    row = store(session, workspace_id, version.id, data=io.BytesIO(PDF))
    second = store(
        session, workspace_id, version.id, "logo.png", b"\x89PNG", content_type="image/png"
    )
    session.commit()
    assert (row.filename, row.content_type, row.size_bytes) == (
        "invoice.pdf",
        "application/pdf",
        len(PDF),
    )
    path = att.campaign_file_path(row)
    assert path.read_bytes() == PDF
    assert path.is_relative_to(get_settings().data_dir / "campaign_files" / str(workspace_id))
    assert path.name.endswith("-invoice.pdf") and path.name != "invoice.pdf"
    listed = att.list_campaign_files(
        session=session, workspace_id=workspace_id, version_id=version.id
    )
    assert [r.id for r in listed] == [row.id, second.id]
    assert att.read_campaign_file(
        session=session, workspace_id=workspace_id, attachment_id=second.id
    ) == (b"\x89PNG")


def test_file_names_are_cleaned_and_content_types_checked(session, setup):
    workspace_id, _, version = setup
    row = store(session, workspace_id, version.id, "../../etc/evil\r\nBcc: x.pdf",
                content_type="text/html\r\nX-Evil: 1")  # fmt: skip
    assert row.filename == "evilBcc: x.pdf"
    assert row.content_type == "application/pdf"  # the bad type was replaced by a guess
    assert "/" not in row.stored_path.removeprefix(f"campaign_files/{workspace_id}/")
    odd = store(session, workspace_id, version.id, "data.weird", content_type="")
    assert odd.content_type == "application/octet-stream"
    with pytest.raises(InvalidInput, match="needs a name") as caught:
        store(session, workspace_id, version.id, " /../ ")
    assert caught.value.field == "file"


def test_size_count_and_duplicate_caps(session, setup, monkeypatch):
    workspace_id, _, version = setup
    monkeypatch.setattr(att, "MAX_FILE_BYTES", 3_000)
    monkeypatch.setattr(att, "MAX_CAMPAIGN_BYTES", 5_000)
    monkeypatch.setattr(att, "MAX_CAMPAIGN_FILES", 3)
    folder = get_settings().data_dir / "campaign_files" / str(workspace_id)
    with pytest.raises(InvalidInput, match="too large"):
        store(session, workspace_id, version.id, "big.pdf", io.BytesIO(b"x" * 3_001))
    assert not folder.exists() or list(folder.iterdir()) == []  # nothing half-written left
    with pytest.raises(InvalidInput, match="empty"):
        store(session, workspace_id, version.id, "empty.pdf", b"")
    store(session, workspace_id, version.id, "a.pdf", b"x" * 3_000)
    with pytest.raises(InvalidInput, match="already attached"):
        store(session, workspace_id, version.id, "A.PDF", b"y")
    with pytest.raises(InvalidInput, match="together"):
        store(session, workspace_id, version.id, "b.pdf", b"x" * 2_001)
    store(session, workspace_id, version.id, "b.pdf", b"x" * 1_000)
    store(session, workspace_id, version.id, "c.pdf", b"x")
    with pytest.raises(InvalidInput, match="at most 3"):
        store(session, workspace_id, version.id, "d.pdf", b"x")
    session.commit()
    assert len(list(folder.iterdir())) == 3


def test_only_drafts_change_and_workspaces_are_separate(session, setup):
    workspace_id, other_id, version = setup
    published = _version(session, workspace_id, number=2, draft=False,
                         campaign_id=version.campaign_id)  # fmt: skip
    with pytest.raises(InvalidInput, match="published"):
        store(session, workspace_id, published.id)
    row = store(session, workspace_id, version.id)
    session.commit()
    with pytest.raises(NotFoundError):
        store(session, other_id, version.id)
    with pytest.raises(NotFoundError):
        att.remove_campaign_file(session=session, workspace_id=other_id, attachment_id=row.id,
                                 user_id=None)  # fmt: skip
    with pytest.raises(NotFoundError):
        att.read_campaign_file(session=session, workspace_id=other_id, attachment_id=row.id)
    assert (
        att.list_campaign_files(session=session, workspace_id=other_id, version_id=version.id) == []
    )


def test_a_failed_transaction_leaves_no_stored_file(session, setup):
    workspace_id, _, version = setup
    row = store(session, workspace_id, version.id)
    path = att.campaign_file_path(row)
    assert path.exists()
    session.rollback()
    assert not path.exists()
    assert session.exec(select(CampaignAttachment)).all() == []


def test_copies_share_the_file_until_the_last_one_is_removed(session, setup):
    workspace_id, _, version = setup
    row = store(session, workspace_id, version.id)
    session.commit()
    path = att.campaign_file_path(row)
    # Publishing freezes version 1; the next draft gets a copy of its files.
    version.is_draft = False
    draft = _version(session, workspace_id, number=2, campaign_id=version.campaign_id)
    copy = att.copy_campaign_file(
        session=session,
        workspace_id=workspace_id,
        attachment_id=row.id,
        version_id=draft.id,
        user_id=None,
    )
    session.commit()
    assert (copy.stored_path, copy.filename, copy.version_id) == (
        row.stored_path,
        row.filename,
        draft.id,
    )
    with pytest.raises(InvalidInput, match="published"):
        att.remove_campaign_file(session=session, workspace_id=workspace_id, attachment_id=row.id,
                                 user_id=None)  # fmt: skip
    session.rollback()
    att.remove_campaign_file(session=session, workspace_id=workspace_id, attachment_id=copy.id,
                             user_id=None)  # fmt: skip
    session.commit()
    assert path.exists()  # version 1 still sends it
    assert att.read_campaign_file(session=session, workspace_id=workspace_id,
                                  attachment_id=row.id) == PDF  # fmt: skip


def test_removing_the_last_row_deletes_the_file_only_after_commit(session, setup):
    workspace_id, _, version = setup
    row = store(session, workspace_id, version.id)
    session.commit()
    path = att.campaign_file_path(row)
    att.remove_campaign_file(session=session, workspace_id=workspace_id, attachment_id=row.id,
                             user_id=None)  # fmt: skip
    assert path.exists()
    session.rollback()  # the removal did not happen: the file must still be there
    assert path.exists()
    assert att.list_campaign_files(session=session, workspace_id=workspace_id,
                                   version_id=version.id)  # fmt: skip
    att.remove_campaign_file(session=session, workspace_id=workspace_id, attachment_id=row.id,
                             user_id=None)  # fmt: skip
    session.commit()
    assert not path.exists()
    assert att.list_campaign_files(session=session, workspace_id=workspace_id,
                                   version_id=version.id) == []  # fmt: skip
