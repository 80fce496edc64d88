// 简体中文: English text (as written in the t()/tn() call) -> Chinese. For tn() the key is
// the English plural form. Keep {placeholders} unchanged; group entries by view.
export const ZH_CN = {
  // Erasing and deleting accounts (Admin page, Settings, login)
  "Erase {label}?": "要抹除 {label} 吗？",
  "{username} is signed out everywhere and can never log in or be found again. The profile is blanked, the messages are cleared in everyone's history, the groups are left (owned ones handed on) and files no one else has are deleted. This cannot be undone.":
    "{username} 将在所有设备上退出登录，且再也不能登录或被找到。资料会被清空，消息会从所有人的记录中清除，将退出所有群组（拥有的群组会转让），没有其他人使用的文件会被删除。此操作无法撤销。",
  "Type {username} to confirm": "输入 {username} 以确认",
  Erase: "抹除",
  "Type the username exactly to confirm.": "请准确输入用户名以确认。",
  "{username} is erased.": "{username} 已被抹除。",
  "Erase…": "抹除…",
  "Delete my account": "注销我的账号",
  "Your account is deleted after a waiting period: then you cannot log in any more, your profile is blanked, your messages are cleared and you leave your groups. Logging in during the waiting period cancels the deletion.":
    "账号会在等待期结束后注销：之后你将无法再登录，资料会被清空，消息会被清除，并退出所有群组。在等待期内登录会取消注销。",
  "Your password": "你的密码",
  "Delete my account…": "注销我的账号…",
  "Delete your account?": "要注销你的账号吗？",
  "You are signed out when the waiting period ends, and your account cannot come back after that.":
    "等待期结束时你会被退出登录，此后账号无法恢复。",
  "Your account will be deleted on {when}. Log in again before then to cancel the deletion.":
    "你的账号将于 {when} 注销。在此之前重新登录即可取消注销。",
  "You logged in, so your account's pending deletion is cancelled.": "你已登录，账号的注销申请已取消。",
  "Your session has ended: this account was deleted.": "会话已结束：此账号已被注销。",
};
