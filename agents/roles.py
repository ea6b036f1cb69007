"""The three roles and what each may do, by model permission codename ("app_label.codename").

An entry "app_label.*" grants every permission of that app; "app_label.view_*" every view permission.
Later issues add their models here; the groups are rebuilt after each migrate."""

ADMINISTRATOR = "Administrator"
SUPERVISOR = "Supervisor"
AGENT = "Agent"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    ADMINISTRATOR: [
        "auth.*",
        "authtoken.*",
        "omnichannel.*",
        "channels_line.*",
        "routing.*",
        "agents.*",
        "axes.*",  # sign-in lockouts: see and clear them
    ],
    SUPERVISOR: [
        "omnichannel.*",  # with view_all_conversations: every conversation
        "channels_line.view_*",
        "routing.view_*",
        "agents.view_*",
        "agents.change_agentprofile",
        # An agent profile's skills are rows of their own (edited on the profile's page).
        "agents.add_agentskill",
        "agents.change_agentskill",
        "agents.delete_agentskill",
        "auth.view_user",
    ],
    AGENT: [
        # Not "omnichannel.view_*": that would take in view_all_conversations. view_conversation means
        # "their own" (omnichannel.selectors.conversations_visible says which).
        "omnichannel.view_workerheartbeat",
        "omnichannel.view_messagingaccount",
        "omnichannel.view_contact",
        "omnichannel.view_socialprofile",
        "omnichannel.view_conversation",
        "omnichannel.view_conversationactivity",
        "omnichannel.view_message",
        "omnichannel.view_messageedit",
        "omnichannel.view_attachment",
        "omnichannel.add_message",
        "omnichannel.change_conversation",
        "omnichannel.add_contact",
        "omnichannel.change_contact",
        "omnichannel.change_socialprofile",
        "agents.view_agentprofile",  # their own (agents/admin.py and, next, the API filter by viewer)
        "agents.view_agentskill",
    ],
}
