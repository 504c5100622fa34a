package caddylog

// Claim is claim, for the tests.
var Claim = claim
