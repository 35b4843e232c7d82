"""Tables of the SQL store (SQLAlchemy Core), shared by SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
    false,
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
    # Revision 0003: whose conversation it is. ``scope`` is the user id of a per-user default
    # thread ("" otherwise, see ConversationKey); ``owner`` the user who started it (never
    # changes; NULL for conversations made before owners were recorded, which are shared);
    # ``shared`` whether every user of the project may use it; ``title`` a rename.
    Column("scope", String(256), nullable=False, server_default=""),
    Column("owner", String(256)),
    Column("shared", Boolean, nullable=False, server_default=false()),
    Column("title", String(200)),
    UniqueConstraint(
        "project_id", "agent_name", "thread_id", "scope", name="uq_conversation_scope"
    ),
    Index("ix_conversations_owner", "owner"),
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
    # Answers (revision 0004): the model's reasoning, kept apart from the text; its usage
    # ({prompt_tokens, completion_tokens, total_tokens, reasoning_tokens?}); how it ended.
    Column("reasoning", Text),
    Column("usage", JSON),
    Column("finish_reason", String(32)),
    Column("user_id", String(256)),  # user messages: who asked (revision 0003)
    # Answers (revision 0005): the latest state of each tool call ({tool_call_id, name, state,
    # arguments, result | error}) and of each question asked ({interrupt_id, payload,
    # expires_at, state, value?}), as the ``tool`` and ``interrupt`` frames carry them.
    Column("tools", JSON),
    Column("interrupts", JSON),
    Index("ix_messages_conversation", "conversation_id", "id"),
    Index("ix_messages_streaming", "status", "node_id"),
    Index("ix_messages_request", "conversation_id", "request_id"),
)

# The newest message of a conversation each user has been shown (revision 0003): what is
# newer is unread.
conversation_reads = Table(
    "conversation_reads",
    metadata,
    Column("user_id", String(256), primary_key=True),
    Column("conversation_id", IdType, ForeignKey("conversations.id"), primary_key=True),
    Column("message_id", BigInteger, nullable=False),
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
    Column("origin_scope", String(256)),  # revision 0003
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)
