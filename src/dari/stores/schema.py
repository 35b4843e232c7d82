"""Tables of the SQL store (SQLAlchemy Core), shared by SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
IdType = BigInteger().with_variant(Integer(), "sqlite")

conversations = Table(
    "conversations",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("project_id", String(128), nullable=False),
    Column("agent_name", String(128), nullable=False),
    Column("thread_id", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "agent_name", "thread_id", name="uq_conversation"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("conversation_id", IdType, ForeignKey("conversations.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("images", JSON, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("request_id", String(160)),
    Column("node_id", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("author", String(128)),  # reports: the agent that did the work (revision 0002)
    Index("ix_messages_conversation", "conversation_id", "id"),
    Index("ix_messages_streaming", "status", "node_id"),
)

chat_requests = Table(
    "chat_requests",
    metadata,
    Column("user_id", String(256), primary_key=True),
    Column("client_message_id", String(128), primary_key=True),
    Column("request_id", String(160), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("user_id", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("agent_name", String(128), nullable=False),
    Column("task", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("result", Text),
    Column("origin_agent", String(128)),
    Column("origin_thread", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)
