"""The choke point every request passes before anything is stored or sent (``api.gateway.Gateway.guard``):
sensitive values are masked, tokenized or refused (``redaction``), user and tool content is screened for
prompt injection (``screen``), per tenant x feature policy (``policy``). A tokenized value's original
lives only in the call's vault (``vault``), which puts it back in the answer.
"""
