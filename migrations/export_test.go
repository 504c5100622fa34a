package migrations

// UpFrom and DownFrom run other files than the embedded ones (a file with
// an injected failure), through the same runner.
var (
	UpFrom   = up
	DownFrom = down
)
