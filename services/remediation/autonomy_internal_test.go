package remediation

import "testing"

func TestUnderRoot(t *testing.T) {
	tests := []struct {
		path, root string
		want       bool
	}{
		{"/home/u/Downloads/x.exe", "/home/u/Downloads", true},
		{"/home/u/Downloads/a/b/x.exe", "/home/u/Downloads/", true},
		{"/home/u/Downloads", "/home/u/Downloads", false},
		{"/home/u/Downloads-old/x", "/home/u/Downloads", false},
		{"/home/u/Downloads/../../../etc/passwd", "/home/u/Downloads", false},
		{"/home/u/Downloads/./x", "/home/u/Downloads", false},
		{"/home/u/Downloads//x", "/home/u/Downloads", false},
		{"/etc/passwd", "/", false},
		{"relative/x", "relative", false},
		{`C:\Users\u\Downloads\x.exe`, `C:\Users\u\Downloads`, true},
		{`c:\users\U\downloads\x.exe`, `C:\Users\u\Downloads`, true},
		{`C:\Users\u\Downloads\..\..\..\Windows\x`, `C:\Users\u\Downloads`, false},
		{`C:\Users\u\Downloads/../x`, `C:\Users\u\Downloads`, false},
		{`C:\Windows\x`, `C:\`, false},
		{`C:\Users\u\Downloads\x`, `/home/u`, false},
		{`D:\Users\u\Downloads\x`, `C:\Users\u\Downloads`, false},
	}
	for _, tt := range tests {
		t.Run(tt.path+" in "+tt.root, func(t *testing.T) {
			if got := underRoot(tt.path, tt.root); got != tt.want {
				t.Errorf("underRoot(%q, %q) = %v, want %v", tt.path, tt.root, got, tt.want)
			}
		})
	}
}
