//go:build !unix && !windows

package agent

import "os"

// dirHandle is not available on this platform: quarantine and restore fail.
type dirHandle struct{ path string }

func openDir(string) (*dirHandle, error)                           { return nil, errUnsupported }
func (d *dirHandle) Close() error                                  { return nil }
func (d *dirHandle) id() (fileID, error)                           { return fileID{}, errUnsupported }
func (d *dirHandle) lstat(string) (fileStat, error)                { return fileStat{}, errUnsupported }
func (d *dirHandle) open(string) (*os.File, error)                 { return nil, errUnsupported }
func (d *dirHandle) create(string, os.FileMode) (*os.File, error)  { return nil, errUnsupported }
func (d *dirHandle) remove(string) error                           { return errUnsupported }
func (d *dirHandle) rename(string, *dirHandle, string, bool) error { return errUnsupported }
func fileIDOf(*os.File) (fileID, error)                            { return fileID{}, errUnsupported }
func chmodOpen(*os.File, os.FileMode) error                        { return errUnsupported }
func errCrossDevice(error) bool                                    { return false }
