-- credgate migration 005_renewal_leases (down)
--
-- Drops the renewal leases. Run it only with every credgate stopped: a
-- renewal in flight would lose the mark that keeps others from replaying
-- its refresh token.

DROP TABLE IF EXISTS renewal_leases;
