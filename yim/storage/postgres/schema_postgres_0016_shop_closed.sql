-- Migration 0016 (PostgreSQL): a shop can be closed (yim/storage/erase.py: its owner was erased and
-- no other admin agent was left to run it). A closed shop has no agents and no open sessions,
-- and a customer's message to it is refused with shop_closed instead of waiting in a queue
-- nobody reads. NULL: open. Written only under the shop's row lock.
ALTER TABLE shops ADD COLUMN closed_at bigint;
