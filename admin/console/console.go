// Package console holds the web console's files (plain HTML, CSS and
// JavaScript, no build step), embedded into the admin server which serves
// them under /console/.
package console

import "embed"

// Files holds static/: index.html, app.js, app.css.
//
//go:embed static
var Files embed.FS
