"""Push providers: Web Push (VAPID), APNs (token auth, HTTP/2), FCM HTTP v1 and the Matrix push gateway.

Each provider takes plain typed inputs (a target, a `Notification`, `PushSettings`) and answers one
`PushOutcome`; it knows nothing of storage, the bus or the gateway, so the pushers table and the
outbox decide who to push and when, and this package only how.
"""
