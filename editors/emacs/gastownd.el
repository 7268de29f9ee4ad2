;;; gastownd.el --- Gas Town event feed, sessions and attribution  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The gastownd authors

;; Author: The gastownd authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: tools, processes
;; SPDX-License-Identifier: MIT

;; This file is not part of GNU Emacs.

;;; Commentary:

;; gastownd owns the event log and the agent sessions of a Gas Town
;; workspace (a "town").  This package talks to it over its Unix socket
;; (newline-delimited JSON) without ever blocking Emacs: every connection
;; is asynchronous and every request has a timeout.
;;
;;   M-x gastownd-feed       the live event feed in *gastownd-feed*
;;   M-x gastownd-sessions   the sessions; RET: digest, s: seance
;;   M-x gastownd-who        who closed, created or updated the issue at point
;;   M-x gastownd-mode-line-mode   "gastownd: 2 open" or "gastownd: down"
;;
;; The socket path comes from `gastownctl sockname' (see
;; `gastownd-gastownctl-command'), run once per town.  The town is the one
;; around the buffer's directory, else GT_TOWN_ROOT, else gastownctl's
;; default.  See docs/editors.md in the gastownd repository.

;;; Code:

(require 'cl-lib)
(require 'parse-time)
(require 'subr-x)
(require 'tabulated-list)

(declare-function term-mode "term" ())
(declare-function term-char-mode "term" ())

(defgroup gastownd nil
  "Gas Town's event feed, sessions and attribution from gastownd."
  :group 'tools
  :prefix "gastownd-")

(defcustom gastownd-gastownctl-command '("gastownctl")
  "The gastownctl command, as a program and its first arguments.
It prints the daemon's socket path (`gastownctl sockname') and runs seances."
  :type '(repeat string))

(defcustom gastownd-socket nil
  "The daemon's socket path; nil to ask `gastownctl sockname'."
  :type '(choice (const :tag "Ask gastownctl" nil) file))

(defcustom gastownd-town-root nil
  "The town to use; nil for the town around the buffer's directory.
Outside any town, gastownctl decides: GT_TOWN_ROOT, GT_ROOT, then ~/gt."
  :type '(choice (const :tag "From the buffer" nil) directory))

(defcustom gastownd-timeout 3.0
  "Seconds after which a request to the daemon gives up."
  :type 'number)

(defcustom gastownd-feed-lines 500
  "Lines kept in the feed buffer; the oldest go first."
  :type 'natnum)

(defcustom gastownd-reconnect-min 0.25
  "Seconds before the feed's first reconnection attempt.
The delay doubles after each failed attempt, up to `gastownd-reconnect-max'."
  :type 'number)

(defcustom gastownd-reconnect-max 5.0
  "Longest delay, in seconds, between the feed's reconnection attempts."
  :type 'number)

(defcustom gastownd-sessions-limit 200
  "Rows fetched by `gastownd-sessions'."
  :type 'natnum)

(defcustom gastownd-mode-line-interval 5.0
  "Seconds between two refreshes of `gastownd-mode-line-mode'."
  :type 'number)

(defcustom gastownd-time-format "%H:%M:%S"
  "Local time format of feed rows (see `format-time-string')."
  :type 'string)

(defcustom gastownd-date-format "%Y-%m-%d %H:%M"
  "Local time format of session and attribution rows."
  :type 'string)

(defconst gastownd-protocol 1
  "The version of the gastownd protocol this package speaks.")

;;;; Messages

(defun gastownd--notify (format-string &rest args)
  "Tell the user, on one line, what FORMAT-STRING and ARGS say."
  (message "gastownd: %s" (apply #'format format-string args)))

(defun gastownd--describe (op err)
  "A one-line description of ERR, the failure of the request OP."
  (let ((code (or (plist-get err :code) "error"))
        (text (or (plist-get err :message) "no message")))
    (if (member code '("unavailable" "timeout" "gastownctl"))
        text
      (format "%s failed (%s): %s" op code text))))

(defmacro gastownd--safely (&rest body)
  "Run BODY; report an error on one line instead of letting it escape."
  (declare (indent 0) (debug t))
  `(condition-case err
       (progn ,@body)
     (error (gastownd--notify "internal error: %s"
                              (error-message-string err)))))

;;;; Towns and sockets

(defvar-local gastownd--buffer-town nil
  "The town a gastownd buffer was opened for: a directory, or `default'.")

(defun gastownd--find-root (dir)
  "The outermost ancestor of DIR holding mayor/town.json.
Else the outermost one holding a mayor/ directory, else nil (as gt decides)."
  (let ((dir (directory-file-name (expand-file-name dir)))
        with-marker with-mayor)
    (while dir
      (cond ((file-regular-p (expand-file-name "mayor/town.json" dir))
             (setq with-marker dir))
            ((file-directory-p (expand-file-name "mayor" dir))
             (setq with-mayor dir)))
      (let ((parent (directory-file-name (file-name-directory dir))))
        (setq dir (unless (equal parent dir) parent))))
    (or with-marker with-mayor)))

(defun gastownd--town-root ()
  "The current buffer's town, or nil for gastownctl's default."
  (cond (gastownd-town-root
         (directory-file-name (expand-file-name gastownd-town-root)))
        (gastownd--buffer-town
         (unless (eq gastownd--buffer-town 'default) gastownd--buffer-town))
        ((and default-directory (not (file-remote-p default-directory)))
         (gastownd--find-root default-directory))))

(defvar gastownd--sockets (make-hash-table :test #'equal)
  "Socket paths found so far, by town (\"\" for the default).")

(defvar gastownd--socket-waiters (make-hash-table :test #'equal)
  "Callbacks waiting for a running `gastownctl sockname', by town.")

(defun gastownd-forget-sockets ()
  "Forget the socket paths found so far.
Needed after changing `gastownd-gastownctl-command' or the environment."
  (interactive)
  (clrhash gastownd--sockets))

(defun gastownd--socket-found (key path err)
  "Give PATH (or ERR) to everything waiting for the socket of town KEY."
  (let ((callbacks (reverse (gethash key gastownd--socket-waiters))))
    (remhash key gastownd--socket-waiters)
    (when path (puthash key path gastownd--sockets))
    (dolist (callback callbacks)
      (gastownd--safely (funcall callback path err)))))

(defun gastownd--socket (root callback)
  "Call CALLBACK with the socket path of ROOT's daemon and nil.
Or with nil and an error plist, when gastownctl fails."
  (let* ((key (or root ""))
         (known (gethash key gastownd--sockets)))
    (cond (gastownd-socket
           (funcall callback (expand-file-name gastownd-socket) nil))
          (known (funcall callback known nil))
          ((gethash key gastownd--socket-waiters)
           (push callback (gethash key gastownd--socket-waiters)))
          (t (puthash key (list callback) gastownd--socket-waiters)
             (gastownd--run-sockname root key)))))

(defun gastownd--local-directory ()
  "A local directory that exists, for running processes from."
  (if (and default-directory (not (file-remote-p default-directory))
           (file-directory-p default-directory))
      default-directory
    (expand-file-name "~/")))

(defun gastownd--sockname-error (format-string &rest args)
  "An error plist of `gastownctl sockname', saying FORMAT-STRING with ARGS."
  (list :code "gastownctl" :message (apply #'format format-string args)))

(defun gastownd--run-sockname (root key)
  "Run `gastownctl sockname' for ROOT, asynchronously, for the waiters of KEY."
  (let* ((command (append gastownd-gastownctl-command
                          (when root (list "--town-root" root))
                          '("sockname")))
         (shown (string-join command " "))
         (output (generate-new-buffer " *gastownd-sockname*"))
         (default-directory (gastownd--local-directory))
         (done nil)
         timer process)
    (cl-flet ((finish (path err)
                (unless done
                  (setq done t)
                  (when timer (cancel-timer timer))
                  (when (and process (process-live-p process))
                    (delete-process process))
                  (when (buffer-live-p output) (kill-buffer output))
                  (gastownd--socket-found key path err))))
      (condition-case err
          (setq process
                (make-process
                 :name "gastownd-sockname" :buffer output
                 :command (cons (or (executable-find (car command))
                                    (error "%s: not found" (car command)))
                                (cdr command))
                 :connection-type 'pipe :noquery t
                 :sentinel
                 (lambda (proc _event)
                   (unless (process-live-p proc)
                     (let ((text (with-current-buffer output
                                   (string-trim (buffer-string))))
                           (status (process-exit-status proc)))
                       (if (and (eq (process-status proc) 'exit) (= status 0)
                                (not (string-empty-p text))
                                (not (string-search "\n" text)))
                           (finish text nil)
                         (finish nil (gastownd--sockname-error
                                      "`%s' failed (exit %s): %s" shown status
                                      (car (split-string text "\n"))))))))))
        (error
         (finish nil (gastownd--sockname-error
                      "cannot run `%s' (%s); set `gastownd-gastownctl-command'"
                      shown (error-message-string err)))))
      (unless done
        (setq timer
              (run-at-time gastownd-timeout nil
                           (lambda ()
                             (finish nil (gastownd--sockname-error
                                          "`%s' did not finish within %s s"
                                          shown gastownd-timeout)))))))))

;;;; Connections

(defun gastownd--decode (line)
  "LINE as an alist, or nil if it is not a JSON object."
  (condition-case nil
      (let ((value (json-parse-string line :object-type 'alist
                                      :array-type 'list
                                      :null-object nil :false-object nil)))
        (and (consp value) value))
    (error nil)))

(defun gastownd--error-plist (object)
  "The error OBJECT of a reply (an alist) as (:code CODE :message MESSAGE)."
  (list :code (or (alist-get 'code object) "error")
        :message (or (alist-get 'message object) "no message")))

(defconst gastownd--not-running-regexp
  (regexp-opt '("No such file" "refused" "code 2\n" "code 111\n"))
  "What a failed connection says when nothing listens on the socket.")

(defun gastownd--connect-error (path err)
  "A one-line error for a failed connection to PATH.
ERR is the error signaled, or the sentinel's event string."
  (let ((text (if (stringp err) err (error-message-string err))))
    (list :code "unavailable"
          :message
          (if (string-match-p gastownd--not-running-regexp text)
              (format "the daemon is not running (nothing listens on %s)" path)
            (format "cannot connect to %s: %s" path (string-trim text))))))

(defun gastownd--open (path on-frame on-close)
  "Connect to the socket PATH; return the process, or nil.
ON-FRAME gets each frame received, decoded.  ON-CLOSE gets an error plist
once, when the connection fails or ends, unless it was closed with
`gastownd--close'.  Neither runs before this function returns."
  (condition-case err
      (let ((process (make-network-process
                      :name "gastownd" :family 'local :service path
                      :nowait t :noquery t :coding 'utf-8-unix
                      :filter #'gastownd--filter
                      :sentinel #'gastownd--sentinel)))
        (process-put process 'gastownd-path path)
        (process-put process 'gastownd-on-frame on-frame)
        (process-put process 'gastownd-on-close on-close)
        (process-put process 'gastownd-partial "")
        (if (memq (process-status process) '(connect open))
            process
          ;; With :nowait, a connection refused at once leaves the process
          ;; in a `file-error' (or `file-missing') status, and no sentinel runs.
          (gastownd--open-failed (gastownd--status-error path process)
                                 on-close)))
    (error
     (gastownd--open-failed (gastownd--connect-error path err) on-close))))

(defun gastownd--status-error (path process)
  "The error plist of PROCESS, which could not connect to PATH at once."
  (let ((status (process-status process)))
    (gastownd--close process)
    (if (or (eq status 'file-missing) (file-writable-p path))
        (list :code "unavailable"
              :message
              (format "the daemon is not running (nothing listens on %s)" path))
      (list :code "unavailable"
            :message (format "cannot connect to %s (%s)" path status)))))

(defun gastownd--open-failed (failure on-close)
  "Report FAILURE, a connection that failed, to ON-CLOSE later; return nil."
  (run-at-time 0 nil (lambda () (gastownd--safely (funcall on-close failure))))
  nil)

(defun gastownd--close (process)
  "Close PROCESS from our side: nothing more is delivered from it."
  (when process
    (process-put process 'gastownd-dropped t)
    (when (process-live-p process) (delete-process process))))

(defun gastownd--fail (process err)
  "PROCESS ended with ERR: tell its owner, once."
  (unless (process-get process 'gastownd-dropped)
    (gastownd--close process)
    (let ((on-close (process-get process 'gastownd-on-close)))
      (gastownd--safely (funcall on-close err)))))

(defun gastownd--send (process message)
  "Send MESSAGE (a plist) on PROCESS, now or once it is connected."
  (unless (process-get process 'gastownd-dropped)
    (let ((data (concat (json-serialize message) "\n")))
      (if (eq (process-status process) 'open)
          (process-send-string process data)
        (process-put process 'gastownd-outbox
                     (append (process-get process 'gastownd-outbox)
                             (list data)))))))

(defun gastownd--sentinel (process event)
  "React to EVENT on PROCESS: connected, failed or closed."
  (let ((path (process-get process 'gastownd-path)))
    (cond ((process-get process 'gastownd-dropped))
          ((eq (process-status process) 'open)
           (let ((outbox (process-get process 'gastownd-outbox)))
             (process-put process 'gastownd-outbox nil)
             (condition-case err
                 (dolist (data outbox) (process-send-string process data))
               (error (gastownd--fail process
                                      (gastownd--connect-error path err))))))
          ((string-prefix-p "failed" event)
           (gastownd--fail process (gastownd--connect-error path event)))
          (t
           (gastownd--fail
            process (list :code "unavailable"
                          :message "the daemon closed the connection"))))))

(defun gastownd--filter (process chunk)
  "Split CHUNK, received on PROCESS, into frames and hand them over."
  (let* ((data (concat (process-get process 'gastownd-partial) chunk))
         (lines (split-string data "\n"))
         (on-frame (process-get process 'gastownd-on-frame)))
    (process-put process 'gastownd-partial (car (last lines)))
    (dolist (line (butlast lines))
      (unless (or (process-get process 'gastownd-dropped)
                  (string-empty-p line))
        (let ((frame (gastownd--decode line)))
          (when frame
            (gastownd--safely (funcall on-frame frame))))))))

(defun gastownd--hello ()
  "The hello request that opens every connection."
  (list :op "hello" :id 0 :protocol gastownd-protocol :client "gastownd.el"))

(defun gastownd--request (root op fields callback &optional timeout)
  "Send OP with FIELDS (a plist) to the daemon of ROOT.
Call CALLBACK once with the result (an alist) and nil, or with nil and an
error plist, within TIMEOUT seconds (default `gastownd-timeout') whatever
the daemon does."
  (let ((finished nil) (process nil) (timer nil)
        (limit (or timeout gastownd-timeout)))
    (cl-flet ((finish (result err)
                (unless finished
                  (setq finished t)
                  (when timer (cancel-timer timer))
                  (gastownd--close process)
                  (gastownd--safely (funcall callback result err)))))
      (setq timer
            (run-at-time
             limit nil
             (lambda ()
               (finish nil (list :code "timeout"
                                 :message
                                 (format
                                  "the daemon did not answer `%s' within %.1f s"
                                  op limit))))))
      (gastownd--socket
       root
       (lambda (path err)
         (cond
          (finished)
          (err (finish nil err))
          ((setq process (gastownd--open
                          path
                          (lambda (frame)
                            (cond ((alist-get 'push frame))
                                  ((and (eql (alist-get 'id frame) 1)
                                        (alist-get 'ok frame))
                                   (finish (alist-get 'result frame) nil))
                                  ((not (alist-get 'ok frame))
                                   ;; Ours, the hello's, or a connection-level
                                   ;; error (busy, forbidden).
                                   (finish nil (gastownd--error-plist
                                                (alist-get 'error frame))))))
                          (lambda (close-error) (finish nil close-error))))
           (gastownd--send process (gastownd--hello))
           (gastownd--send process (append (list :op op :id 1) fields)))))))))

;;;; Text

(defun gastownd--local-time (ts format-string)
  "The timestamp TS in local time, with FORMAT-STRING.
TS itself when it does not parse."
  (or (and (stringp ts)
           (ignore-errors
             (format-time-string format-string
                                 (parse-iso8601-time-string ts))))
      (format "%s" (or ts "?"))))

(defun gastownd--short (value &optional limit)
  "VALUE on one line of at most LIMIT characters (default 60).
Strings as they are, other values as JSON."
  (let* ((limit (or limit 60))
         (text (if (stringp value)
                   value
                 (condition-case nil
                     (json-serialize value)
                   (error (format "%S" value)))))
         (text (replace-regexp-in-string "\r?\n" "⏎" text)))
    (if (> (length text) limit)
        (concat (substring text 0 (1- limit)) "…")
      text)))

(defun gastownd--summary (payload)
  "PAYLOAD (an alist) as key=value pairs, keys sorted."
  (mapconcat (lambda (pair)
               (format "%s=%s" (car pair) (gastownd--short (cdr pair))))
             (sort (copy-sequence (and (consp payload) payload))
                   (lambda (a b)
                     (string< (symbol-name (car a)) (symbol-name (car b)))))
             " "))

(defun gastownd--pad (text width)
  "TEXT padded with spaces to WIDTH columns."
  (let ((text (format "%s" (or text ""))))
    (concat text (make-string (max 0 (- width (string-width text))) ?\s))))

(defun gastownd--who (actor node)
  "ACTOR, with @NODE when the record came from another machine."
  (if (and node (not (string-empty-p node)))
      (format "%s@%s" (or actor "") node)
    (or actor "")))

(defun gastownd--remote-node (record)
  "The node of RECORD (a session, digest or attribution), if another one.
Nil when RECORD comes from the node that answered."
  (and (eq (alist-get 'remote record) t) (alist-get 'node record)))

(defun gastownd--columns (&rest columns)
  "COLUMNS joined by two spaces, without trailing blanks."
  (string-trim-right (string-join columns "  ")))

(defun gastownd--event-line (event &optional node)
  "EVENT (an alist) as `HH:MM:SS  type  actor  summary'.
NODE, or the event's own node, names the machine it came from."
  (gastownd--columns
   (gastownd--local-time (alist-get 'ts event) gastownd-time-format)
   (gastownd--pad (or (alist-get 'type event) "?") 14)
   (gastownd--pad (gastownd--who (alist-get 'actor event)
                                 (or node (alist-get 'node event)))
                  24)
   (gastownd--summary (alist-get 'payload event))))

(defun gastownd--marker (text)
  "A line of the feed's own (a reconnection, a resync) saying TEXT."
  (format "-- %s  %s" (format-time-string gastownd-time-format) text))

(defun gastownd--short-id (id)
  "The first 8 characters of the session ID."
  (truncate-string-to-width (or id "?") 8))

(defun gastownd--attribution-line (record)
  "One line of the who buffer for RECORD."
  (let ((digest (alist-get 'digest_id record)))
    (gastownd--columns
     (gastownd--pad (or (alist-get 'action record) "?") 7)
     (gastownd--local-time (alist-get 'at record) gastownd-date-format)
     (gastownd--short-id (alist-get 'session_id record))
     (gastownd--who (alist-get 'actor record) (gastownd--remote-node record))
     (if digest (concat "digest " digest) "(session open)"))))

(defun gastownd--attribution-lines (issue records)
  "The lines of the who buffer: ISSUE, then one line per record of RECORDS."
  (if (null records)
      (list (format "no session is recorded as touching %s" issue))
    (cons (format "%s: %d change%s" issue (length records)
                  (if (= (length records) 1) "" "s"))
          (mapcar #'gastownd--attribution-line records))))

(defun gastownd--issue-at-point ()
  "The Beads id at point (gt-a1b2, spotter-dov.3, hq-cv-4k3kg), or nil."
  (save-excursion
    (let ((case-fold-search nil)
          (chars "A-Za-z0-9.-"))
      (skip-chars-backward chars)
      (let* ((start (point))
             (end (progn (skip-chars-forward chars) (point)))
             (word (replace-regexp-in-string
                    "\\`[.-]+\\|[.-]+\\'" ""
                    (buffer-substring-no-properties start end))))
        (when (string-match-p "\\`[a-z][a-z0-9]*-[a-z0-9][a-z0-9.-]*\\'" word)
          word)))))

;;;; The feed

(cl-defstruct (gastownd--feed (:constructor gastownd--feed-create))
  "A running feed: its buffer, filter, last cursor shown and connection."
  buffer root types all-nodes cursor fresh process (generation 0) delay down
  ever-up retry-timer reply-timer)

(defvar gastownd--the-feed nil
  "The running feed (there is one feed buffer).")

(defconst gastownd-feed-buffer-name "*gastownd-feed*"
  "The name of the feed buffer.")

(defvar gastownd-feed-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map special-mode-map)
    map)
  "Keymap of `gastownd-feed-mode'.")

(define-derived-mode gastownd-feed-mode special-mode "gastownd-feed"
  "The live event feed of a town: one line per event, newest at the bottom.
\\<gastownd-feed-mode-map>\\[revert-buffer] reads the latest events again."
  (setq-local revert-buffer-function #'gastownd--feed-revert)
  (setq-local truncate-lines t)
  (add-hook 'kill-buffer-hook #'gastownd--feed-killed nil t))

(defun gastownd--trim-lines (limit)
  "Delete the first lines of the current buffer beyond the last LIMIT."
  (let ((excess (- (count-lines (point-min) (point-max)) limit)))
    (when (> excess 0)
      (goto-char (point-min))
      (forward-line excess)
      (delete-region (point-min) (point)))))

(defun gastownd--feed-append (feed lines)
  "Append LINES to FEED's buffer; keep its last `gastownd-feed-lines' lines.
Windows at the end of the buffer stay at its end."
  (let ((buffer (gastownd--feed-buffer feed)))
    (when (and lines (buffer-live-p buffer))
      (with-current-buffer buffer
        (let* ((inhibit-read-only t)
               (end (point-max))
               (following (cl-remove-if-not
                           (lambda (window) (= (window-point window) end))
                           (get-buffer-window-list buffer nil t)))
               (at-end (= (point) end)))
          (save-excursion
            (goto-char (point-max))
            (dolist (line lines) (insert line "\n"))
            (gastownd--trim-lines gastownd-feed-lines))
          (when at-end (goto-char (point-max)))
          (dolist (window following)
            (set-window-point window (point-max))))))))

(defun gastownd--feed-say (feed text)
  "Append TEXT to FEED as a line of the feed's own."
  (gastownd--feed-append feed (list (gastownd--marker text))))

(defun gastownd--feed-cancel-reply-timer (feed)
  "Cancel FEED's reply timer, if there is one."
  (when (gastownd--feed-reply-timer feed)
    (cancel-timer (gastownd--feed-reply-timer feed))
    (setf (gastownd--feed-reply-timer feed) nil)))

(defun gastownd--feed-disconnect (feed)
  "Close FEED's connection; frames still on their way are ignored."
  (cl-incf (gastownd--feed-generation feed))
  (gastownd--feed-cancel-reply-timer feed)
  (gastownd--close (gastownd--feed-process feed))
  (setf (gastownd--feed-process feed) nil))

(defun gastownd--feed-reason (err)
  "What ERR, the end of a feed's connection, means, on one line."
  (if (equal (plist-get err :code) "end")
      "the daemon ended the stream (stopping?)"
    (gastownd--describe "subscribe" err)))

(defun gastownd--feed-retry (feed delay)
  "Reconnect FEED after DELAY seconds."
  (when (gastownd--feed-retry-timer feed)
    (cancel-timer (gastownd--feed-retry-timer feed)))
  (setf (gastownd--feed-retry-timer feed)
        (run-at-time delay nil
                     (lambda ()
                       (when (eq gastownd--the-feed feed)
                         (gastownd--feed-connect feed))))))

(defun gastownd--feed-lost (feed err)
  "FEED lost its connection with ERR.
Say so once per outage, and retry with a doubling delay."
  (gastownd--feed-disconnect feed)
  (if (equal (plist-get err :code) "overflow")
      (progn
        ;; Dropped for falling behind: the last cursor shown loses nothing.
        (gastownd--feed-say
         feed "fell behind the daemon; catching up from the last event shown")
        (gastownd--feed-retry feed 0))
    (unless (gastownd--feed-down feed)
      (setf (gastownd--feed-down feed) t)
      (if (gastownd--feed-ever-up feed)
          (progn
            (gastownd--feed-say
             feed (concat (gastownd--feed-reason err) "; reconnecting"))
            (gastownd--notify
             "the daemon went away; the feed will resume when it is back"))
        (gastownd--notify "%s; the feed will start when it is up"
                          (gastownd--feed-reason err))))
    (let ((delay (gastownd--feed-delay feed)))
      (setf (gastownd--feed-delay feed)
            (min (* 2 delay) gastownd-reconnect-max))
      (gastownd--feed-retry feed delay))))

(defun gastownd--feed-filters (feed message)
  "MESSAGE (a plist) with FEED's filters added."
  (append message
          (when (gastownd--feed-types feed)
            (list :types (vconcat (gastownd--feed-types feed))))
          (when (gastownd--feed-all-nodes feed)
            (list :all_nodes t))))

(defun gastownd--feed-expect-reply (feed)
  "Give up on FEED's connection if the pending reply does not come in time."
  (gastownd--feed-cancel-reply-timer feed)
  (let ((generation (gastownd--feed-generation feed)))
    (setf (gastownd--feed-reply-timer feed)
          (run-at-time
           gastownd-timeout nil
           (lambda ()
             (when (and (eq gastownd--the-feed feed)
                        (= generation (gastownd--feed-generation feed)))
               (gastownd--feed-lost
                feed (list :code "timeout"
                           :message "the daemon did not answer in time"))))))))

(defun gastownd--feed-send (feed message)
  "Send MESSAGE, with FEED's filters, and expect its reply in time."
  (gastownd--feed-expect-reply feed)
  (gastownd--send (gastownd--feed-process feed)
                  (gastownd--feed-filters feed message)))

(defun gastownd--feed-refused (feed id err)
  "The daemon answered request ID of FEED with ERR."
  (cond ((or (not (memql id '(0 1 2)))
             (equal (plist-get err :code) "shutting_down"))
         ;; A connection-level error, or a daemon on its way out.
         (gastownd--feed-lost feed err))
        (t
         ;; The daemon refused the feed itself (a bad type name, say):
         ;; retrying cannot help.
         (gastownd--feed-say feed (gastownd--describe "feed" err))
         (gastownd--notify "%s" (gastownd--describe "feed" err))
         (gastownd-feed-stop))))

(defun gastownd--feed-subscribed (feed result)
  "FEED's subscription was answered with RESULT."
  (gastownd--feed-cancel-reply-timer feed)
  ;; A resync on the head cursor the query just gave has nothing to re-read:
  ;; reading again would only ask the same question (and loop).
  (if (and (alist-get 'resync result) (not (gastownd--feed-fresh feed)))
      (progn
        (gastownd--feed-say
         feed (concat "resync: the daemon could not resume after the last "
                      "event shown (the log was replaced or pruned); "
                      "reading the latest events again"))
        (setf (gastownd--feed-cursor feed) nil)
        (gastownd--feed-connect feed))
    (when (and (gastownd--feed-down feed) (gastownd--feed-ever-up feed))
      (gastownd--feed-say feed "reconnected"))
    (setf (gastownd--feed-down feed) nil
          (gastownd--feed-ever-up feed) t
          (gastownd--feed-delay feed) gastownd-reconnect-min)))

(defun gastownd--feed-frame (feed frame)
  "Handle FRAME, received by FEED."
  (let ((push (alist-get 'push frame))
        (id (alist-get 'id frame))
        (result (alist-get 'result frame)))
    (cond
     ((equal push "event")
      (let ((event (alist-get 'event frame)))
        (when (consp event)
          (when (alist-get 'cursor frame)
            (setf (gastownd--feed-cursor feed) (alist-get 'cursor frame)
                  (gastownd--feed-fresh feed) nil))
          (gastownd--feed-append
           feed (list (gastownd--event-line event (alist-get 'node frame)))))))
     ((member push '("overflow" "end"))
      (gastownd--feed-lost
       feed (list :code push :message (or (alist-get 'message frame) push))))
     ((not (alist-get 'ok frame))
      (gastownd--feed-refused feed id
                              (gastownd--error-plist (alist-get 'error frame))))
     ((eql id 1)
      (gastownd--feed-append
       feed (mapcar #'gastownd--event-line
                    (reverse (alist-get 'events result))))
      (setf (gastownd--feed-cursor feed) (alist-get 'cursor result)
            (gastownd--feed-fresh feed) t)
      (gastownd--feed-subscribe feed))
     ((eql id 2)
      (gastownd--feed-subscribed feed result)))))

(defun gastownd--feed-connect (feed)
  "Connect FEED: read the latest events, then subscribe.
With a cursor, resume the subscription from there instead."
  (gastownd--feed-disconnect feed)
  (let ((generation (gastownd--feed-generation feed)))
    (cl-flet ((current ()
                (and (eq gastownd--the-feed feed)
                     (= generation (gastownd--feed-generation feed)))))
      (gastownd--socket
       (gastownd--feed-root feed)
       (lambda (path err)
         (cond
          ((not (current)))
          (err (gastownd--feed-lost feed err))
          ((setf (gastownd--feed-process feed)
                 (gastownd--open
                  path
                  (lambda (frame)
                    (when (current) (gastownd--feed-frame feed frame)))
                  (lambda (close-error)
                    (when (current) (gastownd--feed-lost feed close-error)))))
           (gastownd--send (gastownd--feed-process feed) (gastownd--hello))
           (if (gastownd--feed-cursor feed)
               (gastownd--feed-subscribe feed)
             (gastownd--feed-send
              feed (list :op "query" :id 1 :limit gastownd-feed-lines))))))))))

(defun gastownd--feed-subscribe (feed)
  "Subscribe FEED from its cursor."
  (gastownd--feed-send
   feed (list :op "subscribe" :id 2 :cursor (gastownd--feed-cursor feed))))

(defun gastownd-feed-stop ()
  "Stop the feed: close its connection and timers.  Its buffer stays."
  (interactive)
  (let ((feed gastownd--the-feed))
    (when feed
      (setq gastownd--the-feed nil)
      (gastownd--feed-disconnect feed)
      (when (gastownd--feed-retry-timer feed)
        (cancel-timer (gastownd--feed-retry-timer feed))))))

(defun gastownd--feed-killed ()
  "The feed buffer is being killed: stop the feed."
  (when (and gastownd--the-feed
             (eq (gastownd--feed-buffer gastownd--the-feed) (current-buffer)))
    (gastownd-feed-stop)))

(defun gastownd--feed-start (buffer root types all-nodes)
  "Start a feed into BUFFER, emptied, from the town ROOT.
TYPES and ALL-NODES are its filters."
  (gastownd-feed-stop)
  (with-current-buffer buffer
    (let ((inhibit-read-only t)) (erase-buffer))
    (setq gastownd--buffer-town (or root 'default)))
  (setq gastownd--the-feed
        (gastownd--feed-create :buffer buffer :root root :types types
                               :all-nodes all-nodes
                               :delay gastownd-reconnect-min))
  (gastownd--feed-connect gastownd--the-feed))

(defun gastownd--feed-revert (&rest _)
  "Read the latest events again."
  (let ((feed gastownd--the-feed))
    (gastownd--feed-start (current-buffer) (gastownd--town-root)
                          (and feed (gastownd--feed-types feed))
                          (and feed (gastownd--feed-all-nodes feed)))))

;;;###autoload
(defun gastownd-feed (&optional types all-nodes)
  "Show the town's live event feed in the buffer *gastownd-feed*.
TYPES limits it to these event types (a list of strings).  ALL-NODES asks
for the whole town's feed, every machine's.  Interactively, a prefix
argument asks for both."
  (interactive
   (when current-prefix-arg
     (list (split-string (read-string "Event types (blank for all): ")
                         "[ ,]+" t)
           (y-or-n-p "Events of all nodes? "))))
  (let ((root (gastownd--town-root))
        (buffer (get-buffer-create gastownd-feed-buffer-name))
        (feed gastownd--the-feed)
        (all-nodes (and all-nodes t)))
    (with-current-buffer buffer
      (unless (derived-mode-p 'gastownd-feed-mode) (gastownd-feed-mode)))
    (unless (and feed (eq (gastownd--feed-buffer feed) buffer)
                 (equal (gastownd--feed-root feed) root)
                 (equal (gastownd--feed-types feed) types)
                 (eq (gastownd--feed-all-nodes feed) all-nodes))
      (gastownd--feed-start buffer root types all-nodes))
    (pop-to-buffer-same-window buffer)
    buffer))

;;;; Sessions

(defconst gastownd-sessions-buffer-name "*gastownd-sessions*"
  "The name of the sessions buffer.")

(defvar gastownd-sessions-mode-map
  (let ((map (make-sparse-keymap)))
    (set-keymap-parent map tabulated-list-mode-map)
    (define-key map (kbd "RET") #'gastownd-sessions-digest)
    (define-key map (kbd "s") #'gastownd-sessions-seance)
    map)
  "Keymap of `gastownd-sessions-mode'.")

(define-derived-mode gastownd-sessions-mode tabulated-list-mode
  "gastownd-sessions"
  "The sessions of a town, newest first.
\\<gastownd-sessions-mode-map>\\[gastownd-sessions-digest] shows the \
digest of the session at point, \\[gastownd-sessions-seance] resumes it
with `gastownctl seance', \\[revert-buffer] refreshes the list."
  (setq tabulated-list-format
        (vector (list "Started"
                      (length (format-time-string gastownd-date-format 0)) t)
                (list "Session" 8 nil)
                (list "State" 9 t)
                (list "Actor" 28 t)
                (list "End" 17 t)
                (list "Topic" 0 nil)))
  (setq tabulated-list-padding 1)
  (setq-local revert-buffer-function #'gastownd--sessions-refresh)
  (tabulated-list-init-header))

(defun gastownd--session-entry (row)
  "A `tabulated-list-entries' entry for ROW, a session.
A session that ran on another node shows it: actor@node."
  (list row
        (vector (gastownd--local-time (alist-get 'started_at row)
                                      gastownd-date-format)
                (gastownd--short-id (alist-get 'session_id row))
                (or (alist-get 'state row) "?")
                (gastownd--who (alist-get 'actor row) (gastownd--remote-node row))
                (or (alist-get 'end_reason row) "")
                (gastownd--short (or (alist-get 'topic row)
                                     (alist-get 'summary row)
                                     "")))))

(defun gastownd--sessions-show (result err)
  "Show RESULT, the answer to `sessions', or ERR in the current buffer."
  (if (not err)
      (progn
        (setq tabulated-list-entries
              (mapcar #'gastownd--session-entry (alist-get 'sessions result)))
        (tabulated-list-print t))
    (setq tabulated-list-entries nil)
    (tabulated-list-print)
    (let ((inhibit-read-only t))
      (insert "-- " (gastownd--describe "sessions" err) "\n"))
    (gastownd--notify "%s" (gastownd--describe "sessions" err))))

(defun gastownd--sessions-refresh (&rest _)
  "Fetch the sessions again, asynchronously (every node's, when federated)."
  (let ((buffer (current-buffer)))
    (gastownd--request
     (gastownd--town-root) "sessions" (list :limit gastownd-sessions-limit)
     (lambda (result err)
       (when (buffer-live-p buffer)
         (with-current-buffer buffer
           (gastownd--sessions-show result err)))))))

;;;###autoload
(defun gastownd-sessions ()
  "List the town's sessions in the buffer *gastownd-sessions*.
In a federated town, every node's."
  (interactive)
  (let ((root (gastownd--town-root))
        (buffer (get-buffer-create gastownd-sessions-buffer-name)))
    (with-current-buffer buffer
      (unless (derived-mode-p 'gastownd-sessions-mode)
        (gastownd-sessions-mode))
      (setq gastownd--buffer-town (or root 'default))
      (gastownd--sessions-refresh))
    (pop-to-buffer-same-window buffer)
    buffer))

(defun gastownd--session-at-point ()
  "The session row at point, or nil after saying there is none."
  (or (tabulated-list-get-id)
      (progn (gastownd--notify "no session on this line") nil)))

(defun gastownd--digest-text (digest)
  "DIGEST (an alist) as text: its title, then its summary."
  (concat "# " (or (alist-get 'title digest)
                   (format "Digest: %s" (alist-get 'session_id digest)))
          "\n\ndigest " (or (alist-get 'digest_id digest) "?")
          (if (gastownd--remote-node digest)
              (concat ", node " (alist-get 'node digest))
            "")
          "\n\n" (string-trim-right (or (alist-get 'summary digest) ""))
          "\n"))

(defun gastownd--step-line (number step)
  "Return STEP as line NUMBER of a wisp's step list."
  (format "%d. **[%s]** %s %s\n" number (alist-get 'kind step)
          (or (alist-get 'at step) "")
          (or (alist-get 'ref step)
              (gastownd--summary (alist-get 'payload step)))))

(defun gastownd--wisp-text (wisp)
  "WISP (an alist), an open session with no digest yet, as text."
  (let ((steps (alist-get 'steps wisp)))
    (concat
     (format "# Open session %s\n\n" (alist-get 'session_id wisp))
     (format "no digest yet: the session is still open (segment %s)\n\n"
             (or (alist-get 'segment wisp) 1))
     (format "**Actor**: %s\n**Topic**: %s\n" (alist-get 'actor wisp)
             (or (alist-get 'topic wisp) ""))
     (format "**Started**: %s\n**Last activity**: %s\n"
             (alist-get 'started_at wisp) (alist-get 'last_activity_at wisp))
     (format "**Steps**: %s\n\n" (or (alist-get 'step_count wisp)
                                     (length steps)))
     (string-join (cl-loop for step in steps
                           for number from 1
                           collect (gastownd--step-line number step))))))

(defun gastownd--show-text (name text root)
  "Show TEXT, read-only, in the buffer NAME, for the town ROOT."
  (let ((buffer (get-buffer-create name)))
    (with-current-buffer buffer
      (let ((inhibit-read-only t))
        (erase-buffer)
        (insert text)
        (goto-char (point-min)))
      (special-mode)
      (setq gastownd--buffer-town (or root 'default)))
    buffer))

(defun gastownd-sessions-digest ()
  "Show the digest of the session at point.
For an open session, which has no digest yet, show its wisp so far."
  (interactive)
  (let ((row (gastownd--session-at-point))
        (root (gastownd--town-root)))
    (when row
      (let* ((id (alist-get 'session_id row))
             (open (equal (alist-get 'state row) "open"))
             (op (if open "wisp" "digest")))
        (gastownd--request
         root op (if open (list :session id) (list :ref id))
         (lambda (result err)
           (if err
               (gastownd--notify "%s" (gastownd--describe op err))
             (pop-to-buffer-same-window
              (gastownd--show-text
               (format "*gastownd-digest %s*" id)
               (if open
                   (gastownd--wisp-text result)
                 (gastownd--digest-text result))
               root)))))))))

(defun gastownd-sessions-seance ()
  "Resume the session at point with `gastownctl seance', in a terminal."
  (interactive)
  (let ((row (gastownd--session-at-point))
        (root (gastownd--town-root)))
    (when row
      (require 'term)
      (let* ((id (alist-get 'session_id row))
             (command (append gastownd-gastownctl-command
                              (when root (list "--town-root" root))
                              (list "seance" id)))
             (default-directory (gastownd--local-directory)))
        (condition-case err
            (let ((buffer (apply #'make-term
                                 (format "gastownd-seance %s"
                                         (gastownd--short-id id))
                                 (car command) nil (cdr command))))
              (with-current-buffer buffer
                (term-mode)
                (term-char-mode))
              (pop-to-buffer buffer)
              buffer)
          (error (gastownd--notify "cannot run the seance: %s"
                                   (error-message-string err))))))))

;;;; Who

(defconst gastownd-who-buffer-name "*gastownd-who*"
  "The name of the buffer `gastownd-who' answers in.")

;;;###autoload
(defun gastownd-who (issue)
  "Show which sessions closed, created or updated ISSUE.
Interactively, ISSUE is the Beads id at point; with a prefix argument, or
with no id at point, it is asked for."
  (interactive
   (let ((at (gastownd--issue-at-point)))
     (list (if (and at (not current-prefix-arg))
               at
             (read-string (format-prompt "Issue" at) nil nil at)))))
  (if (or (null issue) (string-empty-p issue))
      (gastownd--notify "no issue id at point (like gt-a1b2)")
    (gastownd--request
     (gastownd--town-root) "attribution" (list :issue issue)
     (lambda (result err)
       (if err
           (gastownd--notify "%s" (gastownd--describe "attribution" err))
         (display-buffer
          (gastownd--show-text
           gastownd-who-buffer-name
           (concat (string-join
                    (gastownd--attribution-lines
                     (or (alist-get 'issue result) issue)
                     (alist-get 'records result))
                    "\n")
                   "\n")
           nil)))))))

;;;; Mode line

(defvar gastownd--mode-line-string ""
  "What `gastownd-mode-line-mode' shows.
\" gastownd: 2 open\", or \" gastownd: down\" when the daemon is not running.")

(defvar gastownd--mode-line-timer nil
  "The timer refreshing `gastownd--mode-line-string'.")

(defvar gastownd--mode-line-busy nil
  "Non-nil while a refresh of the mode line is on its way.")

(defconst gastownd--open-limit 1000
  "Open sessions counted at most by the mode line.")

(defun gastownd--mode-line-text (result err)
  "The mode line's text for RESULT, the answer to `sessions', or ERR."
  (let ((code (plist-get err :code)))
    (cond ((null err)
           (let ((open (length (alist-get 'sessions result))))
             (format " gastownd: %d%s open" open
                     (if (>= open gastownd--open-limit) "+" ""))))
          ((equal code "unavailable") " gastownd: down")
          ((equal code "timeout") " gastownd: no answer")
          (t " gastownd: ?"))))

(defun gastownd--mode-line-refresh ()
  "Count the open sessions of the selected window's town, asynchronously."
  (unless gastownd--mode-line-busy
    (setq gastownd--mode-line-busy t)
    (gastownd--request
     (with-current-buffer (window-buffer (selected-window))
       (gastownd--town-root))
     ;; :local: this daemon's own wisps, not other nodes' in a federated town.
     "sessions" (list :state "open" :limit gastownd--open-limit :local t)
     (lambda (result err)
       (setq gastownd--mode-line-busy nil)
       (let ((text (gastownd--mode-line-text result err)))
         (unless (equal text gastownd--mode-line-string)
           (setq gastownd--mode-line-string text)
           (force-mode-line-update t)))))))

;;;###autoload
(define-minor-mode gastownd-mode-line-mode
  "Show the daemon's state and its open sessions in the mode line.
The text is refreshed every `gastownd-mode-line-interval' seconds,
asynchronously."
  :global t
  :group 'gastownd
  (when gastownd--mode-line-timer
    (cancel-timer gastownd--mode-line-timer)
    (setq gastownd--mode-line-timer nil))
  (setq global-mode-string
        (delq 'gastownd--mode-line-string (or global-mode-string (list ""))))
  (when gastownd-mode-line-mode
    (setq global-mode-string
          (append global-mode-string (list 'gastownd--mode-line-string)))
    (setq gastownd--mode-line-busy nil)
    (setq gastownd--mode-line-timer
          (run-at-time 0 gastownd-mode-line-interval
                       #'gastownd--mode-line-refresh))))

(provide 'gastownd)
;;; gastownd.el ends here
