"""Push providers: Web Push (VAPID), APNs (token auth, HTTP/2), FCM HTTP v1 and the Matrix push gateway.

Each provider takes plain typed inputs (a target, a `Notification`, `PushSettings`) and answers one
`PushOutcome`; it knows nothing of storage, the bus or the gateway. The push worker
(yim/services/push.py) decides who to push and when, by the pure rules of `yim.push.rules`
(which read the protocol's request structs and errors, nothing else of yim); the providers
only how.
"""
