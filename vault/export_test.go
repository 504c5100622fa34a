package vault

// ClaimSQL is the refresh queue's claim, for the test that reads its plan.
const ClaimSQL = claimSQL
