//go:build !unix

package flags

// openNonBlocking is 0 where named pipes do not block an open.
const openNonBlocking = 0
